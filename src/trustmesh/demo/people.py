"""Deterministic synthetic people for the health and commuter demo domains: plausible, valid, never real."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

from trustmesh.privacy.identifiers import nric_check_letter

SEED = 13_2024
PARTICIPANTS = 3000
ACTIVITIES = 60_000
COMMUTERS = 2500
SHARED_COMMUTERS = 1000  # 40% of commuters are also health participants, for cross-domain linkage
TRIPS = 50_000
YEAR_START = date(2024, 1, 1)
YEAR_DAYS = 366  # 2024 is a leap year


def _listed(text: str) -> tuple[str, ...]:
    """A tuple written as one comma-separated string, so long lists of names stay compact under the formatter."""
    return tuple(text.split(", "))


HEALTH_DATA = Path("domains/health/products/activity-dp/data")
COMMUTER_DATA = Path("domains/commuter/products/trips-dp/data")
PARTICIPANT_COLUMNS = _listed(
    "participant_id, nric, full_name, gender, date_of_birth, phone, postal_code, enrolled_on"
)
ACTIVITY_COLUMNS = _listed(
    "activity_id, participant_id, activity_date, activity_type, steps, active_minutes, calories"
)
COMMUTER_COLUMNS = _listed("commuter_id, nric, full_name, date_of_birth, phone, postal_code, card_type")
TRIP_COLUMNS = _listed(
    "trip_id, commuter_id, tap_in_at, tap_out_at, origin_station, destination_station, mode, fare"
)

# (activity, share of sessions, steps per minute, MET) — MET gives calories for a ~65 kg adult.
ACTIVITY_TYPES = (
    ("walk", 45, 105, 3.5),
    ("run", 14, 165, 9.8),
    ("cycle", 12, 0, 7.5),
    ("swim", 7, 0, 6.0),
    ("gym", 10, 15, 5.0),
    ("yoga", 6, 5, 2.5),
    ("badminton", 6, 60, 5.5),
)
# Weighted draws as tuples with repeats: rng.choice on them is many times faster than rng.choices.
ACTIVITY_DRAW = tuple(kind for kind, share, *_ in ACTIVITY_TYPES for _ in range(share))
MORNING_HOURS = (6, 6, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 9, 9)
EVENING_HOURS = (17, 17, 17, 18, 18, 18, 18, 18, 19, 19, 19, 19, 20, 20)
LEGS = (0, 0, 0, 0, 1, 1, 1, 1, 2, 2)  # to work, home, anywhere else
# Postal sectors: the first two digits of a postal code, 01 to 82 (74 is unused).
POSTAL_SECTORS = tuple(f"{s:02d}" for s in range(1, 83) if s != 74)


CHINESE_SURNAMES = _listed(
    "Tan, Lim, Lee, Ng, Ong, Wong, Goh, Chua, Chan, Koh, Teo, Ang, Yeo, Tay, Ho, Low, Toh, Sim, Chong, Chia, "
    "Seah, Foo, Leong, Phua, Quek, Heng, Lau, Soh, Yap"
)
CHINESE_SYLLABLES = {
    "M": _listed(
        "Wei, Jun, Jie, Hao, Ming, Kai, Zhi, Jian, Cheng, Yong, Kiat, Boon, Hong, Guan, Sheng, Teck, Wen, "
        "Rui, Yi, Xiang"
    ),
    "F": _listed(
        "Hui, Ling, Mei, Xin, Yi, Qi, Shu, Li, Jia, Wen, Siew, Geok, Bee, Yun, Ting, Xuan, En, Min, Pei, Yan"
    ),
}
ENGLISH_NAMES = {
    "M": _listed("Jason, Daniel, Ryan, Marcus, Benjamin, Kelvin, Darren, Alvin, Eugene, Nicholas"),
    "F": _listed("Rachel, Michelle, Grace, Joanne, Sharon, Vanessa, Cheryl, Amanda, Felicia, Jasmine"),
}
MALAY_NAMES = {
    "M": _listed(
        "Muhammad Faris, Ahmad Hafiz, Mohamed Irfan, Muhammad Syafiq, Hakim, Azman, Rizal, Muhammad Danial, "
        "Haziq, Firdaus, Khairul Anwar, Zulkifli"
    ),
    "F": _listed(
        "Nur Aisyah, Siti Nurhaliza, Nurul Huda, Farah, Nur Syahirah, Zarina, Siti Hidayah, Amirah, Nadia, "
        "Nur Atiqah, Aishah, Sabrina"
    ),
}
MALAY_FATHERS = _listed(
    "Rahman, Ismail, Hassan, Osman, Yusof, Ibrahim, Abdullah, Salleh, Ali, Rahim, Jaafar, Kassim, Hamid, "
    "Sulaiman"
)
INDIAN_NAMES = {
    "M": _listed(
        "Arun, Rajesh, Suresh, Vijay, Karthik, Ravi, Prakash, Ganesh, Naveen, Harish, Sanjay, Dinesh, Vikram, "
        "Mohan"
    ),
    "F": _listed(
        "Priya, Kavitha, Lakshmi, Anitha, Deepa, Meena, Shalini, Divya, Revathi, Nisha, Janani, Sangeetha, "
        "Malini, Thenmoli"
    ),
}
INDIAN_FAMILY = _listed(
    "Raman, Krishnan, Subramaniam, Pillai, Nair, Menon, Rajendran, Govindasamy, Muthu, Chandran, Kumar, "
    "Selvaraj, Ramasamy, Naidu"
)
EURASIAN_NAMES = {
    "M": _listed("Daniel, Adrian, Gerard, Nicholas, Bernard, Christopher, Russell, Leon, Mark, Brian"),
    "F": _listed("Melissa, Joanna, Sarah, Clarissa, Vanessa, Andrea, Natalie, Charmaine, Gillian, Rebecca"),
}
EURASIAN_SURNAMES = _listed(
    "de Souza, Pereira, Rodrigues, D'Cruz, Fernandez, Shepherdson, Oliveiro, da Silva, Gomes, Sequeira, "
    "Westerhout, Scully, Minjoot, de Rozario"
)
MRT_STATIONS = _listed(
    "Jurong East, Bukit Batok, Choa Chu Kang, Yew Tee, Woodlands, Yishun, Ang Mo Kio, Bishan, Toa Payoh, "
    "Novena, Orchard, Dhoby Ghaut, City Hall, Raffles Place, Marina Bay, Tanjong Pagar, Outram Park, "
    "Tiong Bahru, Redhill, Queenstown, Buona Vista, Clementi, Boon Lay, Pasir Ris, Tampines, Simei, Bedok, "
    "Kembangan, Eunos, Paya Lebar, Aljunied, Bugis, Serangoon, Kovan, Hougang, Sengkang, Punggol, "
    "HarbourFront, one-north, Bayfront, Bukit Panjang, Beauty World, Botanic Gardens, Stevens, Caldecott, "
    "Springleaf, Woodlands North, Changi Airport"
)
BUS_STOPS = _listed(
    "Tampines Int, Bedok Int, Toa Payoh Int, Ang Mo Kio Int, Jurong East Int, Woodlands Int, Yishun Int, "
    "Boon Lay Int, Clementi Int, Serangoon Int, Punggol Int, Sengkang Int, Bukit Batok Int, "
    "Hougang Central Int, Pasir Ris Int, Bishan Int, Bukit Merah Int, Queensway Int, "
    "Opp Blk 201 Tampines St 21, Blk 123 Bedok Nth St 2, Aft Bishan Rd, Bef Lor 8 Toa Payoh, "
    "Opp Tiong Bahru Plaza, Blk 302 Jurong East St 32, Opp Suntec City, Raffles Hotel, Opp Nex, "
    "Blk 650 Yishun Ave 4, Opp Northpoint City, Aft Clementi Ave 3"
)


@dataclass(frozen=True)
class Person:
    """One synthetic resident: the identifying attributes both demo domains hold about them."""

    nric: str
    full_name: str
    gender: str
    date_of_birth: date
    phone: str
    postal_code: str


class PeopleGenerator:
    """Draws unique, valid synthetic identities from one seeded random stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._nrics: set[str] = set()
        self._phones: set[str] = set()

    def person(self, min_age: int, max_age: int) -> Person:
        """A new person aged between min_age and max_age at the start of 2024."""
        rng = self.rng
        gender = rng.choice("FM")
        birth = date(2024 - rng.randint(min_age, max_age), 1, 1) - timedelta(days=rng.randrange(365))
        return Person(
            nric=self.nric(birth.year),
            full_name=full_name(rng, gender),
            gender=gender,
            date_of_birth=birth,
            phone=self.phone(),
            postal_code=self.postal_code(),
        )

    def nric(self, birth_year: int) -> str:
        """A unique NRIC (S/T, birth-year digits from 1968) or FIN (F/G/M) with a valid check letter."""
        rng = self.rng
        while True:
            if rng.random() < 0.85:
                prefix = "S" if birth_year < 2000 else "T"
                head = (
                    f"{birth_year % 100:02d}"
                    if birth_year >= 1968
                    else f"{rng.randint(0, 1)}{rng.randint(0, 9)}"
                )
                digits = head + "".join(rng.choices("0123456789", k=5))
            else:
                prefix = rng.choices("FGM", weights=(35, 45, 20))[0]
                digits = "".join(rng.choices("0123456789", k=7))
            value = prefix + digits + nric_check_letter(prefix, digits)
            if value not in self._nrics:
                self._nrics.add(value)
                return value

    def phone(self) -> str:
        """A unique Singapore mobile number, written the way people give it: +65 9123 4567."""
        while True:
            number = f"{self.rng.choice('89')}{self.rng.randrange(10**7):07d}"
            if number not in self._phones:
                self._phones.add(number)
                return f"+65 {number[:4]} {number[4:]}"

    def postal_code(self) -> str:
        """A 6-digit postal code: a real sector followed by four digits."""
        return self.rng.choice(POSTAL_SECTORS) + f"{self.rng.randrange(10**4):04d}"


def full_name(rng: random.Random, gender: str) -> str:
    """A plausible Singaporean name for gender, drawn in roughly the population's ethnic mix."""
    group = rng.choices(("chinese", "malay", "indian", "eurasian"), weights=(74, 14, 9, 3))[0]
    if group == "chinese":
        given = " ".join(rng.sample(CHINESE_SYLLABLES[gender], 2))
        name = f"{rng.choice(CHINESE_SURNAMES)} {given}"
        return f"{rng.choice(ENGLISH_NAMES[gender])} {name}" if rng.random() < 0.35 else name
    if group == "malay":
        link = "bin" if gender == "M" else "binte"
        return f"{rng.choice(MALAY_NAMES[gender])} {link} {rng.choice(MALAY_FATHERS)}"
    if group == "indian":
        if rng.random() < 0.5:
            link = "s/o" if gender == "M" else "d/o"
            return f"{rng.choice(INDIAN_NAMES[gender])} {link} {rng.choice(INDIAN_FAMILY)}"
        return f"{rng.choice(INDIAN_NAMES[gender])} {rng.choice(INDIAN_FAMILY)}"
    return f"{rng.choice(EURASIAN_NAMES[gender])} {rng.choice(EURASIAN_SURNAMES)}"


def _day(rng: random.Random, first: date = YEAR_START) -> date:
    """A uniformly random day of 2024 on or after first."""
    offset = (first - YEAR_START).days
    return YEAR_START + timedelta(days=rng.randrange(offset, YEAR_DAYS))


def participants(gen: PeopleGenerator) -> list[tuple[str, Person, date]]:
    """Health programme participants: (participant_id, person, enrolled_on)."""
    rng = gen.rng
    out = []
    for i in range(1, PARTICIPANTS + 1):
        person = gen.person(18, 80)
        enrolled = YEAR_START + timedelta(days=rng.randrange(274))  # January to September
        out.append((f"P{i:06d}", person, enrolled))
    return out


def activities(rng: random.Random, people: Sequence[tuple[str, Person, date]]) -> list[tuple[object, ...]]:
    """Logged exercise sessions, more from keen participants, never before enrolment."""
    engagement = [rng.paretovariate(1.5) for _ in people]
    profile = {a[0]: a[2:] for a in ACTIVITY_TYPES}
    rows = []
    for pid, person, enrolled in rng.choices(people, weights=engagement, k=ACTIVITIES):
        kind = rng.choice(ACTIVITY_DRAW)
        steps_per_minute, met = profile[kind]
        minutes = rng.randint(15, 90)
        steps = round(minutes * steps_per_minute * rng.uniform(0.8, 1.2))
        age_factor = 1.0 - max(0, 2024 - person.date_of_birth.year - 40) * 0.004
        calories = round(met * 65 * minutes / 60 * rng.uniform(0.85, 1.15) * age_factor)
        rows.append((pid, _day(rng, enrolled), kind, steps, minutes, calories))
    rows.sort(key=lambda r: (r[1], r[0]))
    return [(i, *row) for i, row in enumerate(rows, start=1)]


def card_type(rng: random.Random, person: Person) -> str:
    """The fare card a commuter of this age would most likely hold."""
    age = 2024 - person.date_of_birth.year
    if age >= 60:
        return "senior"
    if age <= 20 and rng.random() < 0.9:
        return "student"
    return "workfare" if rng.random() < 0.06 else "adult"


def commuters(
    gen: PeopleGenerator, health: Sequence[tuple[str, Person, date]]
) -> list[tuple[str, Person, str]]:
    """Fare-card holders: (commuter_id, person, card_type); some are the same people as health participants."""
    rng = gen.rng
    people = []
    for _, person, _ in rng.sample(list(health), SHARED_COMMUTERS):
        moved = rng.random() < 0.15
        new_phone = rng.random() < 0.1
        people.append(
            replace(
                person,
                postal_code=gen.postal_code() if moved else person.postal_code,
                phone=gen.phone() if new_phone else person.phone,
            )
        )
    people += [gen.person(7, 85) for _ in range(COMMUTERS - SHARED_COMMUTERS)]
    rng.shuffle(people)
    return [(f"C{i:06d}", p, card_type(rng, p)) for i, p in enumerate(people, start=1)]


def _tap_in(rng: random.Random, day: date, leg: int) -> datetime:
    """A tap-in time on day: morning or evening peak for commutes (leg 0/1), spread out otherwise."""
    if leg == 0:
        hour = rng.choice(MORNING_HOURS)
    elif leg == 1:
        hour = rng.choice(EVENING_HOURS)
    else:
        hour = rng.randint(6, 23)
    return datetime(day.year, day.month, day.day, hour) + timedelta(seconds=rng.randrange(3600))


def trips(rng: random.Random, cardholders: Sequence[tuple[str, Person, str]]) -> list[tuple[object, ...]]:
    """Tapped journeys by bus or MRT: most go between a commuter's home and work stops."""
    anchors = {}
    for cid, _, _ in cardholders:
        mode = "mrt" if rng.random() < 0.55 else "bus"
        stops = MRT_STATIONS if mode == "mrt" else BUS_STOPS
        anchors[cid] = (mode, *rng.sample(stops, 2))
    usage = [rng.paretovariate(2.0) for _ in cardholders]
    concession = {cid: card != "adult" for cid, _, card in cardholders}
    rows = []
    for cid, _, _ in rng.choices(cardholders, weights=usage, k=TRIPS):
        mode, home, work = anchors[cid]
        leg = rng.choice(LEGS)
        if leg == 2 or rng.random() < 0.1:
            mode = rng.choice(("mrt", "bus"))
            stops = MRT_STATIONS if mode == "mrt" else BUS_STOPS
            origin, destination = rng.sample(stops, 2)
        else:
            origin, destination = (home, work) if leg == 0 else (work, home)
        tap_in = _tap_in(rng, _day(rng), leg)
        minutes = rng.randint(8, 65) if mode == "mrt" else rng.randint(5, 50)
        tap_out = tap_in + timedelta(minutes=minutes, seconds=rng.randrange(60))
        cents = min(99 + 3 * minutes, 237)
        if concession[cid]:
            cents = min(cents // 2 + 10, 108)
        fare = f"{cents // 100}.{cents % 100:02d}"
        rows.append((cid, tap_in, tap_out, origin, destination, mode, fare))
    rows.sort(key=lambda r: (r[1], r[0]))
    return [(i, *row) for i, row in enumerate(rows, start=1)]


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Write one CSV with Unix line endings so the bytes are the same on every platform (dates as ISO 8601)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_people_data(mesh: Path) -> None:
    """Write participants, activities, commuters and trips into the health and commuter products."""
    rng = random.Random(SEED)
    gen = PeopleGenerator(rng)
    health = participants(gen)
    _write_csv(
        mesh / HEALTH_DATA / "participants.csv",
        PARTICIPANT_COLUMNS,
        (
            (pid, p.nric, p.full_name, p.gender, p.date_of_birth, p.phone, p.postal_code, enrolled)
            for pid, p, enrolled in health
        ),
    )
    _write_csv(mesh / HEALTH_DATA / "activities.csv", ACTIVITY_COLUMNS, activities(rng, health))
    cardholders = commuters(gen, health)
    _write_csv(
        mesh / COMMUTER_DATA / "commuters.csv",
        COMMUTER_COLUMNS,
        (
            (cid, p.nric, p.full_name, p.date_of_birth, p.phone, p.postal_code, card)
            for cid, p, card in cardholders
        ),
    )
    _write_csv(mesh / COMMUTER_DATA / "trips.csv", TRIP_COLUMNS, trips(rng, cardholders))
