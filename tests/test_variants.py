import pytest

from normlab.errors import UserError
from normlab.variants import DEFAULT_GROUPS, DEFAULT_L1, Variant, parse_variants


@pytest.mark.parametrize("text, norm, groups, l1, canonical, slug", [
    ("bn", "bn", None, 0.0, "bn", "bn"),
    ("gn", "gn", DEFAULT_GROUPS, 0.0, "gn:4", "gn4"),
    ("gn:8", "gn", 8, 0.0, "gn:8", "gn8"),
    ("ln", "ln", None, 0.0, "ln", "ln"),
    ("ln-elem", "ln-elem", None, 0.0, "ln-elem", "ln-elem"),
    ("in", "in", None, 0.0, "in", "in"),
    ("none", "none", None, 0.0, "none", "none"),
    ("bn+l1", "bn", None, DEFAULT_L1, "bn+l1", "bn-l1"),
    ("gn:4+l1=5e-5", "gn", 4, 5e-5, "gn:4+l1=5e-05", "gn4-l1-5e-05"),
    (" BN+L1 ", "bn", None, DEFAULT_L1, "bn+l1", "bn-l1"),
    ("batchnorm", "bn", None, 0.0, "bn", "bn"),                       # aliases name the same entry
    ("GroupNorm:8+l1", "gn", 8, DEFAULT_L1, "gn:8+l1", "gn8-l1"),
    ("brn", "brn", None, 0.0, "brn", "brn"),
    ("frn", "frn", None, 0.0, "frn", "frn"),
    ("gn:8+ws", "gn", 8, 0.0, "gn:8+ws", "gn8-ws"),
    ("gn+l1=5e-5+ws", "gn", 4, 5e-5, "gn:4+ws+l1=5e-05", "gn4-ws-l1-5e-05"),   # modifiers in any order
    ("none+l1=1e+30+ws", "none", None, 1e30, "none+ws+l1=1e+30", "none-ws-l1-1e+30"),  # "+" in an exponent
])
def test_parse_and_names(text, norm, groups, l1, canonical, slug):
    v = Variant.parse(text)
    assert (v.norm, v.groups, v.l1, v.ws) == (norm, groups, l1, "+ws" in canonical)
    assert str(v) == canonical and v.slug == slug
    assert Variant.parse(str(v)) == v


@pytest.mark.parametrize("text, words", [
    ("batchnorms", r"unknown norm 'batchnorms'; choose one of bn, ln, gn, in, ln-elem, brn, frn, none"),
    ("bn+ws=2", "cannot read variant"),
    ("bn:4", "only gn takes a group count"),
    ("gn:0", "not a positive integer"),
    ("gn:x", "not a positive integer"),
    ("bn+l1=-1", "not a positive number"),
    ("bn+l1=abc", "not a positive number"),
    ("bn+l2", "cannot read variant"),
    ("", "cannot read variant"),
])
def test_bad_variants(text, words):
    with pytest.raises(UserError, match=words):
        Variant.parse(text)


def test_parse_list_refuses_duplicates():
    assert [str(v) for v in parse_variants("bn, ln,gn,bn+l1")] == ["bn", "ln", "gn:4", "bn+l1"]
    with pytest.raises(UserError, match="repeats"):
        parse_variants("gn,gn:4")
    with pytest.raises(UserError, match="no variants"):
        parse_variants(" , ")


def test_batch_dependence_and_conv_bias_come_from_the_registry():
    assert [Variant.parse(n).depends_on_batch for n in ("bn", "brn", "gn", "ln", "in", "frn")] == [True, True] + [False] * 4
    assert not Variant.parse("none").normalizes and Variant.parse("frn").normalizes
