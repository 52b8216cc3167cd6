"""Cards are parsed with libyaml where PyYAML has it: the same data as ``yaml.safe_load``, and
for broken YAML the same error (the pure-Python one, which quotes the bad line)."""

from __future__ import annotations

import pytest
import yaml

from loradock.registry.card import AdapterCard
from loradock.registry.card_yaml import load_yaml, split_front_matter


@pytest.mark.parametrize(
    "text",
    [
        "base_model: acme/base\ntags: [a, b]\n",
        "model-index:\n- name: x\n  results:\n  - metrics:\n    - {type: acc, value: 0.5}\n",
        "date: 2026-11-28\nflag: yes\nnum: 1e3\nnull_key: ~\n",  # YAML 1.1 scalars
        "text: 'quoted: colon'\nunicode: \u00e9t\u00e9\n",
        "",
    ],
    ids=["flat", "nested", "scalars", "quotes", "empty"],
)
def test_same_data_as_safe_load(text):
    assert load_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text", ["tags: [oops\n", "a: b: c\n", "key: 'unclosed\n", "- a\nb: c\n"])
def test_same_error_as_safe_load(text):
    with pytest.raises(yaml.YAMLError) as ours:
        load_yaml(text)
    with pytest.raises(yaml.YAMLError) as theirs:
        yaml.safe_load(text)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    ("text", "data", "body"),
    [
        ("---\nbase_model: x\n---\n# Title\n", {"base_model": "x"}, "# Title\n"),
        ("---\n---\nbody", {}, "---\n---\nbody"),  # no block between: no front matter
        ("# no front matter\n", {}, "# no front matter\n"),
        ("---\r\nlicense: mit\r\n---\r\ntext", {"license": "mit"}, "text"),
    ],
    ids=["card", "empty-block", "no-block", "crlf"],
)
def test_front_matter_split_like_repocard(text, data, body):
    from huggingface_hub import ModelCard

    assert split_front_matter(text) == (data, body)
    card = ModelCard(text)  # huggingface_hub splits the same way
    assert card.text == body and card.data.to_dict() == data


def test_a_list_block_is_refused():
    with pytest.raises(ValueError, match="should be a dict"):
        split_front_matter("---\n- a\n- b\n---\nbody")
    with pytest.raises(Exception, match="Malformed card metadata"):
        AdapterCard.from_text("---\n- a\n---\nbody")
