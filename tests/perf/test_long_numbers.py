"""The cheap long-number check finds exactly the runs of 19+ digits a regex finds."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from llmcache_sidecar.keys import decode_json, has_long_number

LONG_NUMBER = re.compile(rb"[0-9]{19,}")


@given(st.binary(max_size=300) | st.lists(st.sampled_from([b"1", b"23", b"0" * 18, b"9" * 19, b" ", b"a", b"\xff", b"."]))
       .map(b"".join))
def test_same_answer_as_the_regex(raw: bytes) -> None:
    assert has_long_number(raw) == (LONG_NUMBER.search(raw) is not None)


def test_integers_beyond_64_bits_stay_exact() -> None:
    assert decode_json(b'{"seed": 123456789012345678901}') == {"seed": 123456789012345678901}
    assert decode_json(b'{"seed": 123456789012345678902}') != decode_json(b'{"seed": 123456789012345678901}')
