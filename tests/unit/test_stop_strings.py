from hypothesis import given
from hypothesis import strategies as st

from ossfleet.harmony import Delta
from ossfleet.replica.generation import StopStrings


@given(st.text(min_size=0, max_size=40), st.text(min_size=1, max_size=6), st.lists(st.integers(1, 7), max_size=40))
def test_output_is_the_text_up_to_the_first_stop_however_it_is_chunked(text, stop, cuts):
    pieces, i = [], 0
    for c in cuts:
        if i >= len(text):
            break
        pieces.append(text[i : i + c])
        i += c
    if i < len(text):
        pieces.append(text[i:])
    f = StopStrings((stop,))
    out = ""
    for n, p in enumerate(pieces):
        out += "".join(d.text for d in f.feed([Delta("content", p)], final=n == len(pieces) - 1))
        if f.hit:
            break
    if not pieces:
        out += "".join(d.text for d in f.feed([], final=True))
    cut = text.find(stop)
    assert out == (text if cut < 0 else text[:cut])
    assert f.hit == (cut >= 0)


def test_reasoning_passes_through_untouched():
    f = StopStrings(("END",))
    out = f.feed([Delta("reasoning", "thinking END"), Delta("content", "answer END more")], final=False)
    assert [(d.kind, d.text) for d in out] == [("reasoning", "thinking END"), ("content", "answer ")]
