"""Chat formats of the families beside gpt-oss: template prompts, plain-text output, Llama's JSON tool calls."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from ossfleet.chatformat import ChatFormat
from ossfleet.errors import InvalidRequest
from ossfleet.harmony import Message, Tool, ToolCall


@pytest.fixture(scope="module")
def toks(tiny_family_checkpoints):
    return {f: (AutoTokenizer.from_pretrained(p), p) for f, p in tiny_family_checkpoints.items()}


def test_each_family_stops_where_its_generation_config_says(toks):
    for family, (tok, path) in toks.items():
        fmt = ChatFormat.of(tok, path)
        assert fmt.family.name == family and not fmt.family.harmony
        names = {tok.convert_ids_to_tokens(i) for i in fmt.stop}
        assert names == {"llama": {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"}, "gemma2": {"<eos>", "<end_of_turn>"},
                         "mixtral": {"</s>"}}[family]  # fmt: skip
        assert set(fmt.stop) <= fmt.special


def test_prompts_are_the_checkpoints_template_with_tools_and_tool_results(toks):
    tok, path = toks["llama"]
    r = ChatFormat.of(tok, path).renderer(tok, "llama-3.1-8b")
    msgs = [Message("system", "Be brief."), Message("user", "Weather in Paris?"),
            Message("assistant", tool_calls=(ToolCall("c1", "weather", '{"city": "Paris"}'),)),
            Message("tool", '{"temp": 20}', tool_call_id="c1")]  # fmt: skip
    text = tok.decode(r.render(msgs, tools=[Tool("weather", "Weather", {"type": "object"})]))
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert "Be brief." in text and '"name": "weather"' in text  # the tool's definition, as Llama's template puts it
    assert '{"name": "weather", "parameters": {"city": "Paris"}}<|eot_id|>' in text  # the earlier call
    assert "<|start_header_id|>ipython<|end_header_id|>" in text  # its result
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_a_template_refusal_is_a_400_that_names_the_model(toks):
    tok, path = toks["gemma2"]
    r = ChatFormat.of(tok, path).renderer(tok, "gemma-2-9b")
    with pytest.raises(InvalidRequest, match=r"'gemma-2-9b' .*has no system role") as e:
        r.render([Message("system", "x"), Message("user", "hi")])
    assert e.value.param == "messages"
    with pytest.raises(
        InvalidRequest, match=r"'gemma-2-9b'.s chat template refuses these messages: Conversation roles"
    ):
        r.render([Message("user", "a"), Message("user", "b")])


def _stream(tok, path, text, tools, pieces=3):
    p = ChatFormat.of(tok, path).parser(tok, "r", raw=False, tools=tools)
    ids = [*tok.encode(text, add_special_tokens=False), tok.convert_tokens_to_ids("<|eot_id|>")]
    out = []
    for i in range(0, len(ids), pieces):
        out += p.feed(ids[i : i + pieces])
    return p, out + p.finish()


def test_llama_json_tool_calls_are_parsed_only_when_tools_were_offered(toks):
    tok, path = toks["llama"]
    call = '{"name": "weather", "parameters": {"city": "Paris"}}'
    p, deltas = _stream(tok, path, call, ["weather"])
    assert [d.kind for d in deltas] == ["tool_call"] and p.stopped_by == "call" and p.calls == 1
    assert deltas[0].tool_call.name == "weather" and deltas[0].tool_call.arguments == '{"city": "Paris"}'
    # No tools offered, an unknown name, or text that is not a call: plain content, all of it.
    for tools, text in (([], call), (["other"], call), (["weather"], '{"name": "weather"')):
        p, deltas = _stream(tok, path, text, tools)
        assert p.calls == 0 and "".join(d.text for d in deltas if d.kind == "content") == text
    # Text that cannot be a call streams as it comes, before the answer ends.
    p = ChatFormat.of(tok, path).parser(tok, "r", raw=False, tools=["weather"])
    assert p.feed(tok.encode("Hello there", add_special_tokens=False))


def test_families_without_a_parsed_tool_format_never_make_calls(toks):
    tok, path = toks["mixtral"]
    p = ChatFormat.of(tok, path).parser(tok, "r", raw=False, tools=["weather"])
    deltas = p.feed(tok.encode('{"name": "weather", "parameters": {}}', add_special_tokens=False)) + p.finish()
    assert p.calls == 0 and [d.kind for d in deltas] == ["content"]


def test_the_gateway_refuses_tools_and_reasoning_effort_a_family_lacks():
    from ossfleet.config import ModelConfig
    from ossfleet.control.admission import check_features
    from ossfleet.protocol.chat import ChatRequest

    gemma = ModelConfig(name="g", spec="gemma-2-9b", path="x")
    llama = ModelConfig(name="l", spec="llama-3.1-8b", path="x")
    with_tools = ChatRequest(model="g", messages=(Message("user", "hi"),), max_tokens=4, tools=(Tool("f"),))
    with pytest.raises(InvalidRequest, match="tools are not supported by model 'g': gemma2") as e:
        check_features(with_tools, gemma)
    assert e.value.param == "tools"
    check_features(ChatRequest(model="l", messages=(Message("user", "hi"),), max_tokens=4, tools=(Tool("f"),)), llama)
    with pytest.raises(InvalidRequest, match="'l': llama does not reason") as e:
        check_features(
            ChatRequest(model="l", messages=(Message("user", "hi"),), max_tokens=4, reasoning_effort="low"), llama
        )
    assert e.value.param == "reasoning_effort"


def test_plain_grammars_take_the_call_format_then_the_tokenizers_end_and_refuse_other_text(toks):
    from ossfleet.structured import Grammars, OutputFormat, grammar

    tok, _ = toks["llama"]
    city = {"type": "object", "properties": {"city": {"type": "string"}}}
    fmt = OutputFormat("tool_call", tools=(Tool("weather", parameters=city),))
    lark = grammar(fmt, 50, harmony=False)
    g = Grammars(tok)
    g.check(lark, "tool_choice")
    good = g.constraint(lark)
    ids = tok.encode('{"name": "weather", "parameters": {"city": "Paris"}}', add_special_tokens=False)
    assert all(good.consume(t) for t in ids)
    assert good.allowed()[tok.eos_token_id]  # the call is whole: the answer may end (Llama's <|eot_id|>)
    bad = g.constraint(lark)
    assert not bad.allowed()[tok.encode("Hello", add_special_tokens=False)[0]]  # no text before the call
