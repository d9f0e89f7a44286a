"""Server-side enrichment of events.

Only IP anonymisation runs in the request path (nothing may be written before it);
the rest needs no answer to the client, so the loader applies it per batch, once per
distinct value (see `loader.py`), which keeps the request path short.

- IP anonymisation (PRODUCT.md §9), applied before anything is written: IPv4 keeps the
  first three octets (the last is zeroed), IPv6 keeps the first 48 bits (the last 80
  are zeroed), the truncation Matomo's and Google Analytics' "anonymize IP" use.
- User agent → browser, OS and device with `ua-parser` (the maintained uap-core
  regexes, shipped in `ua-parser-builtins`). Parsing costs ~0.7 ms, so results are
  cached: a site sees few distinct user agents.
- Bots: uap-core's device family `Spider` plus a short list of tokens that crawlers,
  monitors and HTTP libraries put in their user agent. Flagged events are stored with
  `context.clm.bot = true` so that metrics can leave them out (the default).
- Channel from UTM parameters, then the referrer (the grouping of Google Analytics'
  default channel definitions, reduced to the seven channels clm reports).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ua_parser import parse as ua_parse

CHANNELS = (
    "direct",
    "organic search",
    "paid search",
    "social",
    "email",
    "referral",
    "campaign",
)

_BOT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|headlesschrome|phantomjs|python-requests|"
    r"python-urllib|curl/|wget/|go-http-client|java/|okhttp|uptime|monitor|"
    r"lighthouse|pingdom|facebookexternalhit|preview",
    re.IGNORECASE,
)
_SEARCH = re.compile(
    r"(^|\.)(google|bing|yahoo|duckduckgo|baidu|yandex|ecosia|qwant|startpage|"
    r"naver|seznam|ask)\.[a-z.]+$"
)
_SOCIAL = re.compile(
    r"(^|\.)(facebook|fb|instagram|twitter|x|t|linkedin|lnkd|pinterest|reddit|"
    r"tiktok|youtube|whatsapp|telegram|xing|mastodon|threads|vk)\.[a-z.]+$"
)
_EMAIL_HOSTS = re.compile(r"(^|\.)(mail\.google|outlook\.live|mail\.yahoo)\.com$")
_PAID = ("cpc", "ppc", "paid", "paidsearch", "paid-search", "sem", "cpm", "display")
_SOCIAL_MEDIA = ("social", "social-network", "social-media", "sm", "social media")


def anonymize_ip(ip: str | None) -> str | None:
    """Zero the host part of an address; text that is no address is dropped."""
    if not ip:
        return None
    return _anonymize(ip)


# Cached: a site sees the same addresses again and again, and `ipaddress` parsing
# costs more than all the other enrichment of an event together.
@lru_cache(maxsize=65536)
def _anonymize(ip: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if addr.version == 4:
        return str(ipaddress.ip_network(f"{addr}/24", strict=False).network_address)
    return str(ipaddress.ip_network(f"{addr}/48", strict=False).network_address)


@lru_cache(maxsize=4096)
def parse_user_agent(ua: str) -> tuple[str, str, str, bool]:
    """(browser, os, device, is_bot) of a user-agent string."""
    r = ua_parse(ua)
    browser = r.user_agent.family if r.user_agent else "Other"
    os_name = r.os.family if r.os else "Other"
    device = r.device.family if r.device else "Other"
    bot = device == "Spider" or bool(_BOT.search(ua))
    return browser, os_name, device, bot


def _host(url: str | None) -> str:
    return _hostname(url) if url else ""


@lru_cache(maxsize=65536)
def _hostname(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def utm_from_url(url: str | None) -> dict[str, str]:
    """utm_* from a page URL; Matomo's mtm_* and pk_* campaign names also count."""
    if not url or "?" not in url:
        return {}
    return dict(_utm(url))


@lru_cache(maxsize=65536)
def _utm(url: str) -> tuple[tuple[str, str], ...]:
    try:
        q = parse_qs(urlsplit(url).query)
    except ValueError:
        return ()
    out: dict[str, str] = {}
    for key in ("source", "medium", "campaign", "term", "content"):
        for prefix in ("utm_", "mtm_", "pk_"):
            name = prefix + ("kwd" if prefix == "pk_" and key == "term" else key)
            if name in q and q[name][0]:
                out["utm_" + key] = q[name][0]
                break
    if "gclid" in q and "utm_medium" not in out:
        out["utm_medium"] = "cpc"
        out.setdefault("utm_source", "google")
    return tuple(out.items())


def channel(row: dict[str, Any]) -> str:
    """One of CHANNELS for an event row with url, referrer and utm_* filled."""
    return _channel(
        (row.get("utm_medium") or "").lower(),
        (row.get("utm_source") or "").lower(),
        bool(row.get("utm_campaign")),
        _host(row.get("referrer")),
        _host(row.get("url")),
    )


@lru_cache(maxsize=65536)
def _channel(medium: str, source: str, campaign: bool, ref: str, host: str) -> str:
    if medium or source or campaign:
        if medium in _PAID:
            return "paid search"
        if medium == "email" or source in ("newsletter", "email"):
            return "email"
        if medium in _SOCIAL_MEDIA or _SOCIAL.search(source + ".com"):
            return "social"
        if medium == "organic":
            return "organic search"
        if medium == "referral":
            return "referral"
        return "campaign"
    if not ref or ref == host:
        return "direct"
    if _SEARCH.search(ref):
        return "organic search"
    if _SOCIAL.search(ref):
        return "social"
    if _EMAIL_HOSTS.search(ref):
        return "email"
    return "referral"


def campaign_and_channel(
    url: str | None,
    referrer: str | None,
    utm: tuple[str | None, str | None, str | None, str | None, str | None],
) -> tuple[str | None, str | None, str | None, str | None, str | None, str]:
    """utm_source, _medium, _campaign, _term, _content (the event's own, else those
    of its page URL) and the channel; the loader calls it once per distinct value."""
    row: dict[str, Any] = dict(zip(UTM, utm, strict=True))
    row["url"], row["referrer"] = url, referrer
    for key, value in utm_from_url(url).items():
        if not row.get(key):
            row[key] = value
    return (
        row["utm_source"],
        row["utm_medium"],
        row["utm_campaign"],
        row["utm_term"],
        row["utm_content"],
        channel(row),
    )


UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
