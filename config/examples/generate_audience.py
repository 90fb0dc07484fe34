#!/usr/bin/env python3
"""Writes audience.csv: 10,000 Mexican contacts for the example campaigns, with
deliberate bad rows at fixed line numbers so the demo's summary can be checked.

Deterministic: no randomness, the same file every run. Python 3 standard library only.

    python3 config/examples/generate_audience.py [OUTPUT]   # default: audience.csv beside this script

Line numbers are those of the CSV file: line 1 is the header, data row r is line r + 1.

Every valid phone carries +52, so it parses the same whether or not
dispatch.default_region is set. None uses the old mobile "1" after the country
code ("+52 1 55 ..."): the phonenumber crate (0.3.10) rejects it as invalid.
"""

import csv
import os
import sys

ROWS = 10_000
HEADER = ["phone", "name", "discount", "coupon", "amount", "due_date", "timezone"]

# Rejected by the importer: a record without a phone never reaches Kafka.
EMPTY_PHONE_LINES = [101, 2002, 4003, 6004, 8005]
# Staged, then excluded with reason invalid_phone.
INVALID_PHONE_LINES = [1501, 3502, 5503, 7504, 9505]
INVALID_PHONES = ["12345", "+52 55 12", "not-a-phone", "+1 555", "+52 00 1234 5678"]
# Same contact (same E.164 number and variables) as an earlier line, phone written
# in another style: one staged contact, counted as a duplicate.
DUPLICATE_OF = {
    1001: 11,
    2501: 1511,
    3001: 2011,
    4501: 3511,
    5001: 4011,
    6501: 5511,
    7001: 6011,
    8501: 7511,
    9001: 8011,
    10001: 9011,
}
# Empty coupon: the promo excludes these with missing_variable:coupon; the reminder
# does not use coupon and sends them.
MISSING_COUPON_LINES = [51, 1101, 2201, 3301, 4401, 5551, 6601, 7701, 8801, 9901]

FIRST_NAMES = [
    "María", "José", "Guadalupe", "Juan", "Fernanda", "Luis", "Sofía", "Carlos",
    "Valentina", "Miguel", "Ximena", "Jorge", "Regina", "Ángel", "Camila", "Raúl",
    "Daniela", "Héctor", "Renata", "Iñaki",
]
DISCOUNTS = ["10%", "15%", "20%", "25%", "30%"]
TIMEZONES = ["", "", "", "", "", "", "", "America/Monterrey", "America/Cancun", "America/Tijuana"]


def subscriber(row):
    """8-digit Mexico City subscriber number, distinct for every row: 48271 is
    prime and coprime with 90,000,000, so row -> row * 48271 mod 90,000,000 is a
    bijection."""
    return (row * 48271) % 90_000_000 + 10_000_000


def styled(number8, style):
    """+52 55 <number8> written the ways people type it."""
    a, b = f"{number8:08d}"[:4], f"{number8:08d}"[4:]
    return [
        f"+52 55 {a} {b}",
        f"+5255{a}{b}",
        f"+52 (55) {a}-{b}",
        f"+52-55-{a}-{b}",
        f"+52 55{a}{b}",
    ][style % 5]


def contact(row):
    """The good contact of data row `row` (1-based)."""
    amount_cents = (row * 7919) % 500_000 + 15_000
    return {
        "phone": styled(subscriber(row), row),
        "name": FIRST_NAMES[row % len(FIRST_NAMES)],
        "discount": DISCOUNTS[row % len(DISCOUNTS)],
        "coupon": f"BDAY-{row:05d}",
        # "$1,234.56": the thousands comma makes the CSV writer quote the field.
        "amount": f"${amount_cents // 100:,}.{amount_cents % 100:02d}",
        "due_date": f"2026-11-{20 + row % 10:02d}",
        "timezone": TIMEZONES[row % len(TIMEZONES)],
    }


def check_layout():
    bad = [EMPTY_PHONE_LINES, INVALID_PHONE_LINES, list(DUPLICATE_OF), MISSING_COUPON_LINES]
    special = [line for group in bad for line in group]
    assert len(special) == len(set(special)), "a line is in two bad-row groups"
    assert all(2 <= line <= ROWS + 1 for line in special)
    for dup, original in DUPLICATE_OF.items():
        assert original < dup and original not in special, (dup, original)
    assert len(INVALID_PHONES) == len(INVALID_PHONE_LINES)


def rows():
    invalid = dict(zip(INVALID_PHONE_LINES, INVALID_PHONES))
    for line in range(2, ROWS + 2):
        if line in DUPLICATE_OF:
            original = DUPLICATE_OF[line]
            record = contact(original - 1)
            # Same number, another style than the original's.
            record["phone"] = styled(subscriber(original - 1), original - 1 + 2)
        else:
            record = contact(line - 1)
        if line in EMPTY_PHONE_LINES:
            record["phone"] = ""
        if line in invalid:
            record["phone"] = invalid[line]
        if line in MISSING_COUPON_LINES:
            record["coupon"] = ""
        yield line, record


def e164(phone):
    digits = "".join(c for c in phone if c.isdigit())
    return "+" + digits


def main():
    check_layout()
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "audience.csv")
    written = 0
    seen = set()
    eligible_promo_ending_13 = 0
    eligible_reminder_ending_13 = 0
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, lineterminator="\n")
        writer.writeheader()
        for line, record in rows():
            writer.writerow(record)
            written += 1
            if line in EMPTY_PHONE_LINES or line in INVALID_PHONE_LINES:
                continue
            number = e164(record["phone"])
            if number in seen:
                continue
            seen.add(number)
            if number.endswith("13"):
                eligible_reminder_ending_13 += 1
                if record["coupon"]:
                    eligible_promo_ending_13 += 1
    assert written == ROWS

    staged = ROWS - len(EMPTY_PHONE_LINES) - len(DUPLICATE_OF)
    assert len(seen) == staged - len(INVALID_PHONE_LINES), "valid numbers are not distinct"
    print(f"wrote {out}: {ROWS} data rows (lines 2-{ROWS + 1}, line 1 is the header)")
    print(f"empty phone (rejected at import, never sent to Kafka), lines: {EMPTY_PHONE_LINES}")
    print(f"invalid phone (excluded: invalid_phone), lines: {INVALID_PHONE_LINES}")
    print("duplicates (line: duplicate of line): "
          + ", ".join(f"{d}: {o}" for d, o in DUPLICATE_OF.items()))
    print(f"empty coupon (promo excludes: missing_variable:coupon), lines: {MISSING_COUPON_LINES}")
    print(f"records published to Kafka: {ROWS - len(EMPTY_PHONE_LINES)}")
    print(f"staged unique contacts: {staged}")
    promo = staged - len(INVALID_PHONE_LINES) - len(MISSING_COUPON_LINES)
    reminder = staged - len(INVALID_PHONE_LINES)
    print(f"promo eligible to send: {promo} "
          f"({eligible_promo_ending_13} of them end in 13)")
    print(f"reminder eligible to send: {reminder} "
          f"({eligible_reminder_ending_13} of them end in 13)")


if __name__ == "__main__":
    main()
