"""The keys uploaded lists match on, normalized the same way on both sides.

An uploaded list's keys are normalized in Python as they are loaded (:func:`normalize`);
the users' column they are compared with is normalized by SQL in the warehouse
(:func:`sql_key`), once per build. Both must agree, so both live here:

=========  =========================================  ==================================
match_on   uploaded key (Python)                      users' column (SQL)
=========  =========================================  ==================================
user_id    trimmed                                    TRIM
email      trimmed, lower-cased; needs an ``@``       LOWER(TRIM(..))
phone      E.164 by ``phonenumbers`` when the catalog  the same E.164 rules for the
           names a ``default_country``, else digits   default country as CASE arms,
           alone (SPEC 1.6)                           else the digits alone
=========  =========================================  ==================================

A key that normalizes to nothing is invalid: it never matches (SPEC 1.6) and an upload
reports its row. Phones in SQL: reading a million phones into Python per build would
cost more than the build, so the few rules ``phonenumbers`` applies to the formats people
paste (``+91 98765 43210``, ``098765 43210``, ``9876543210``, ``0091 98765 43210``,
``919876543210``, spaces, dashes, dots, parentheses) are written as one CASE from the
library's own metadata for the default country; a test checks the agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlglot import exp

# phonenumbers (30 ms) is imported by the functions that read phones:
# every command loads this module, few of them read a phone

MATCH_ON = ("user_id", "email", "phone")


def normalize(match_on: str, raw: str | None, country: str | None = None) -> str | None:
    """The key an uploaded cell matches on, None when it is invalid.

    >>> normalize("email", "  Dave.168@Shop.IO "), normalize("email", "no at sign")
    ('dave.168@shop.io', None)
    >>> [normalize("phone", p, "IN") for p in ("+91 98765 43210", "098765 43210", "0091-98765-43210")]
    ['+919876543210', '+919876543210', '+919876543210']
    >>> normalize("phone", "+49 (31) 039-1633"), normalize("phone", "n/a"), normalize("user_id", " u1 ")
    ('49310391633', None, 'u1')
    """
    text = (raw or "").strip()
    if match_on == "email":
        return text.lower() if "@" in text else None
    if match_on == "user_id":
        return text or None
    if country is None:
        return "".join(c for c in text if "0" <= c <= "9") or None
    import phonenumbers

    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def valid_country(code: str) -> bool:
    """Whether ``code`` is a region ``phonenumbers`` knows (ISO 3166 alpha-2).

    >>> valid_country("IN"), valid_country("XX"), valid_country("in")
    (True, False, False)
    """
    import phonenumbers

    return code in phonenumbers.SUPPORTED_REGIONS


@dataclass(frozen=True)
class _Country:
    """What the SQL needs of a region's numbering plan (from phonenumbers' metadata)."""

    code: str  # the country calling code, digits
    national_prefix: str  # '0' in most of the world, '1' in the US, '' where none
    international_prefix: str  # dialled before a country code: '00', '011'
    national_pattern: str  # a whole national number, as a regular expression
    longest: int  # the most digits a national number has


@lru_cache(maxsize=None)
def _country(region: str) -> _Country:
    import phonenumbers

    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    idd = metadata.preferred_international_prefix or metadata.international_prefix or "00"
    if not idd.isdigit():  # a pattern of several prefixes (Brazil's carriers): the common one
        idd = "00"
    # \d is spelt [0-9]: every engine's regular expressions read that the same way
    pattern = metadata.general_desc.national_number_pattern.replace("\\d", "[0-9]")
    return _Country(
        str(phonenumbers.country_code_for_region(region)), metadata.national_prefix or "", idd,
        pattern, max(metadata.general_desc.possible_length),
    )


def _digits(value: exp.Expression) -> exp.Expression:
    # every match: sqlglot adds the 'g' flag for the engines that need it
    return exp.RegexpReplace(this=value, expression=exp.Literal.string("[^0-9]"), replacement=exp.Literal.string(""))


def _starts(text: exp.Expression, prefix: str) -> exp.Expression:
    return exp.Like(this=text.copy(), expression=exp.Literal.string(prefix + "%"))


def _after(text: exp.Expression, digits: int) -> exp.Expression:
    return exp.Substring(this=text.copy(), start=exp.Literal.number(digits + 1))


def _plus(*parts: exp.Expression | str) -> exp.Expression:
    """'+' || parts..."""
    out: exp.Expression = exp.Literal.string("+")
    for part in parts:
        out = exp.DPipe(this=out, expression=exp.Literal.string(part) if isinstance(part, str) else part, safe=True)
    return out


def _national(text: exp.Expression, country: _Country) -> exp.Expression:
    return exp.RegexpLike(this=text.copy(), expression=exp.Literal.string(f"^(?:{country.national_pattern})$"))


def _e164(value: exp.Expression, region: str) -> exp.Expression:
    """``value`` as E.164 the way ``phonenumbers.parse(value, region)`` reads it, for
    the formats of the module's docstring; NULL without digits."""
    c = _country(region)
    d = _digits(value)
    cc, np, idd = c.code, c.national_prefix, c.international_prefix
    has_plus = exp.RegexpLike(this=value.copy(), expression=exp.Literal.string("^[^0-9]*[+]"))
    arms: list[exp.If] = [exp.If(this=exp.EQ(this=d.copy(), expression=exp.Literal.string("")), true=exp.null())]
    if np:  # '+91 0 98765 43210': the national prefix written after the country code
        strip = exp.and_(has_plus, _starts(d, cc + np), _national(_after(d, len(cc) + len(np)), c))
        arms.append(exp.If(this=strip, true=_plus(cc, _after(d, len(cc) + len(np)))))
    arms += [
        # '+00 91 ...' and '0091 ...': an international prefix before the country code
        exp.If(this=_starts(d, idd), true=_plus(_after(d, len(idd)))),
        exp.If(this=has_plus.copy(), true=_plus(d.copy())),
    ]
    if np:
        arms.append(exp.If(this=_starts(d, np), true=_plus(cc, _after(d, len(np)))))
    # '919876543210': the country code without '+', when what follows is a national
    # number and the whole is not (or is too long to be one)
    with_code = exp.and_(
        _starts(d, cc),
        exp.or_(
            exp.and_(exp.Not(this=_national(d, c)), _national(_after(d, len(cc)), c)),
            exp.GT(this=exp.Length(this=d.copy()), expression=exp.Literal.number(c.longest)),
        ),
    )
    arms.append(exp.If(this=with_code, true=_plus(d.copy())))
    return exp.Case(ifs=arms, default=_plus(cc, d.copy()))


def sql_key(match_on: str, value: exp.Expression, country: str | None = None) -> exp.Expression:
    """The users' column ``value`` normalized as :func:`normalize` normalizes an
    uploaded key (NULL or '' where that gives None)."""
    if match_on == "email":
        return exp.Lower(this=exp.Trim(this=value))
    if match_on == "user_id":
        return exp.Trim(this=value)
    if country is None:
        return _digits(value)
    return _e164(value, country)
