"""The demo's access story, played through the real workflow: grants for the Trusted Centre's products,
two people granted the same dataset (NRIC masked for one, in the clear for the other, after two approvals),
and one request waiting in a steward's inbox."""

from __future__ import annotations

from typing import Any

# (requester, dataset, for product, purpose)
PRODUCT_INPUTS = (
    ("adrian", "bts.flights-dp.flights", "transport-tc.punctuality-dp",
     "Sector punctuality statistics by carrier and month, published to the Ministry"),
    ("adrian", "carriers.airlines-dp.airlines", "transport-tc.punctuality-dp",
     "Carrier names for the sector punctuality statistics"),
    ("adrian", "bts.flights-dp.flights", "transport-tc.delay-weather-dp",
     "Departure delays joined to hourly weather for the delay-by-weather analysis"),
    ("adrian", "noaa.weather-dp.weather", "transport-tc.delay-weather-dp",
     "Hourly weather at the origin airports for the delay-by-weather analysis"),
    ("adrian", "faa.airports-dp.airports", "transport-tc.delay-weather-dp",
     "Airport names and locations for the delay-by-weather analysis"),
    ("adrian", "health.activity-dp.activity_tokens", "transport-tc.active-commuting-dp",
     "Active-commuting linkage: activity per linkage token, released only in groups of 5 or more people"),
    ("adrian", "commuter.trips-dp.trip_tokens", "transport-tc.active-commuting-dp",
     "Active-commuting linkage: journeys per linkage token, released only in groups of 5 or more people"),
)
PERSON_GRANT = dict(
    actor="irfan", address="health.activity-dp.participants",
    columns=["participant_id", "nric", "gender", "postal_code", "enrolled_on"],
    purpose="Active-mobility study: how programme participants commute, linked by NRIC inside the Trusted Centre",
    purpose_category="research", days=90)
UNMASKED_GRANT = dict(
    actor="huimin", address="health.activity-dp.participants", columns=["participant_id", "nric", "gender"],
    unmask=["nric"], purpose="Verifying the active-commuting linkage against source identifiers (audit sample)",
    purpose_category="audit-and-compliance", days=14)
PENDING_REQUEST = dict(
    actor="jiahui", address="commuter.trips-dp.commuters", columns=["commuter_id", "nric", "postal_code"],
    unmask=["nric"], purpose="Linking commuters to health programme participants for the active-mobility study",
    purpose_category="research", days=30)


def _approve_all(ws: Any, request: dict[str, Any]) -> dict[str, Any]:
    while request["state"] == "pending":
        request = ws.access.approve(request["awaiting"][0], request["id"], note="purpose and columns reviewed")
    return request


def seed_access(ws: Any) -> bool:
    """Play the story once per metastore; False when it was already played."""
    if ws.access.overview("gdo-admin", "all")["requests"]:
        return False
    for requester, address, product, purpose in PRODUCT_INPUTS:
        _approve_all(ws, ws.access.request(requester, address, purpose=purpose, purpose_category="product-input",
                                           days=365, for_product=product))
    for grant in (PERSON_GRANT, UNMASKED_GRANT):  # the same query: NRIC masked for one, in the clear for the other
        terms = dict(grant)
        _approve_all(ws, ws.access.request(terms.pop("actor"), terms.pop("address"), **terms))
    pending = dict(PENDING_REQUEST)
    ws.access.request(pending.pop("actor"), pending.pop("address"), **pending)
    return True


# who to sign in as in the demo's web UI, and what each of them shows
SIGN_IN = (
    ("irfan", "consumer: NRIC masked in his query of health participants"),
    ("jiahui", "consumer: her request for commuter data waits for two approvals"),
    ("amirah", "commuter data domain steward: level 1 of jiahui's request"),
    ("alvin", "commuter data owner: level 2 (it unmasks NRIC)"),
    ("huimin", "consumer with an unmasked grant"),
    ("ravi", "transport Trusted Centre: sector policies"),
    ("gdo-admin", "governance admin"),
    ("priya", "auditor: the audit trail and its chain"),
)
TOKENS_FILE = "demo-tokens.json"


def demo_tokens(ws: Any, days: int = 30) -> dict[str, str]:
    """An API token for each demo person to sign in with, kept in `.trustmesh/demo-tokens.json` (mode 0600) and
    reused while every one of them still works; issued anew (and audited) otherwise."""
    import json

    from trustmesh.errors import Unauthenticated

    path = ws.root / ".trustmesh" / TOKENS_FILE
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        for person, _ in SIGN_IN:
            ws.tokens.authenticate(f"Bearer {kept[person]}")
        return {person: kept[person] for person, _ in SIGN_IN}
    except (OSError, ValueError, KeyError, TypeError, Unauthenticated):
        pass
    tokens = {person: ws.tokens.issue(person, person, name="demo sign-in", days=days)[0] for person, _ in SIGN_IN}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(tokens, indent=2) + "\n", encoding="utf-8")
    return tokens
