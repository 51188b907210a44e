"""Chat prompts: the model's own template when its tokenizer has one, a plain transcript otherwise."""

from __future__ import annotations

from llmplan.runtime.engine.tokenizer import ByteTokenizer, HFTokenizer
from llmplan.runtime.server.chat import has_chat_template, render_chat, simple_template

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _hf_dir(tmp_path, template: str | None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "hi": 3, "there": 4}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if template is not None:
        hf.chat_template = template
    hf.save_pretrained(tmp_path)
    return tmp_path


def test_hf_tokenizer_with_template_renders_with_it(tmp_path):
    tok = HFTokenizer(_hf_dir(tmp_path, TEMPLATE))  # the engine's own wrapper, loaded from disk
    assert has_chat_template(tok)
    assert render_chat(tok, MESSAGES) == "<s><system>be brief</system><user>hi there</user><assistant>"
    assert render_chat(tok, MESSAGES, add_generation_prompt=False).endswith("</user>")


def test_tokenizer_without_template_gets_plain_transcript(tmp_path):
    for tok in (HFTokenizer(_hf_dir(tmp_path, None)), ByteTokenizer()):
        assert not has_chat_template(tok)
        want = "<|system|>\nbe brief\n<|user|>\nhi there\n<|assistant|>\n"
        assert render_chat(tok, MESSAGES) == simple_template(MESSAGES) == want
