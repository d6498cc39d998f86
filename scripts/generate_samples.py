"""Generate a deterministic sample corpus of memories for biomem.

The corpus describes six weeks in the work and life of one fictional person,
Maya Lindqvist, product lead at the fictional company Kestrel Systems. She
lives in a fixed UTC+01:00 time zone; all timestamps are emitted in UTC.

Story arc (for the default six weeks starting Monday 2026-10-05):

* Atlas migration - moving the billing ledger to a new database cluster:
  kickoff, dual-write, a failed dry run, Kofi's root cause, a clean second dry
  run, the cutover night.
* Beacon launch - smart notifications in the mobile app: kickoff, beta, an
  Android crash that threatens the date, the fix, go/no-go, launch, numbers.
* Backend hiring - job post, phone screens, Nadia's onsite, offer, acceptance.
* Roadmap 2027 - gathering input, drafts, the leadership review.
* Life - partner Daniel, daughter Ella, mother Birgitta, friends Sofia and Leo,
  Ingrid's book club, running towards an autumn 10k, the dentist, a car
  service, a health scare, a weekend trip to Copenhagen.

Milestones happen on fixed days (scaled when ``--weeks`` differs from 6); the
rest of each day is filled with episodes - clusters of a few memories minutes
apart - drawn from pools that depend on each project's current phase, so later
memories refer back to earlier events. Weekdays are mostly work between 08:00
and 18:30 local time; evenings and weekends are life.

Output is JSON Lines, one memory per line, with the keys ``id``, ``content``,
``created_at``, ``updated_at`` and ``metadata`` (``kind``, ``people``,
``project``, ``topics``, ``importance``, ``emotional_valence``, ``location``).
The same arguments always give byte-identical output: every random choice comes
from ``random.Random(seed)`` and nothing depends on the current time.

Rerun from the repository root::

    python scripts/generate_samples.py
    python scripts/generate_samples.py --seed 7 --count 800 --output -

The default writes ``samples/memories.jsonl`` next to the ``scripts`` folder
(a relative ``--output`` is relative to the current directory). Counts of a few
hundred to about a thousand keep content duplicates near zero; far larger
counts per week start to repeat memories.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "samples" / "memories.jsonl"
DEFAULT_SEED = 20261128
DEFAULT_COUNT = 600
DEFAULT_START = date(2026, 10, 5)
DEFAULT_WEEKS = 6
BASE_DAYS = 42  # milestone days below are written for a six-week timeline

LOCAL_TZ = timezone(timedelta(hours=1))
EDIT_FRACTION = 0.05
CODA_PROBABILITY = 0.3
MAX_RENDER_ATTEMPTS = 14

KINDS = (
    "meeting",
    "task",
    "errand",
    "note",
    "social",
    "health",
    "idea",
    "travel",
    "hobby",
    "family",
)
WEEKDAY_NAMES = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)
MONTH_ABBR = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
MON, TUE, WED, THU, FRI, SAT, SUN = range(7)
WEEKDAYS = (MON, TUE, WED, THU, FRI)

# key -> (canonical full name used in metadata, name used in text)
PEOPLE: dict[str, tuple[str, str]] = {
    "jonas": ("Jonas Berg", "Jonas"),
    "priya": ("Priya Nair", "Priya"),
    "kofi": ("Kofi Mensah", "Kofi"),
    "oskar": ("Oskar Holm", "Oskar"),
    "tomas": ("Tomás Ruiz", "Tomás"),
    "elin": ("Elin Sandberg", "Elin"),
    "hana": ("Hana Sato", "Hana"),
    "nadia": ("Nadia Okafor", "Nadia"),
    "daniel": ("Daniel Lindqvist", "Daniel"),
    "ella": ("Ella Lindqvist", "Ella"),
    "birgitta": ("Birgitta Lindqvist", "Mom"),
    "sofia": ("Sofia Marin", "Sofia"),
    "leo": ("Leo Karlsson", "Leo"),
    "ingrid": ("Ingrid Dahl", "Ingrid"),
    "amani": ("Dr. Farah Amani", "Dr. Amani"),
    "lund": ("Dr. Karin Lund", "Dr. Lund"),
    "amir": ("Amir Haddad", "Amir"),
    "julia": ("Julia Novak", "Julia"),
    "marcus": ("Marcus Lee", "Marcus"),
}

# "@group" entries in a spec's people pick one member; the text uses {group}.
GROUPS: dict[str, tuple[str, ...]] = {
    "colleague": ("priya", "kofi", "oskar", "tomas", "elin", "hana"),
    "friend": ("sofia", "leo"),
    "candidate": ("amir", "julia", "marcus"),
}

PROJECT_NAMES: dict[str, str] = {
    "atlas": "Atlas migration",
    "beacon": "Beacon launch",
    "hiring": "Backend hiring",
    "roadmap": "Roadmap 2027",
}


@dataclass(frozen=True)
class Spec:
    """A memory template: alternative texts plus the metadata they share."""

    kind: str
    texts: tuple[str, ...]
    people: tuple[str, ...]
    project: str | None
    topics: tuple[str, ...]
    importance: float
    valence: float
    locations: tuple[str, ...]
    max_uses: int = 0  # lifetime limit across the corpus; 0 = unlimited


def sp(
    kind: str,
    texts: str | tuple[str, ...],
    *,
    topics: str,
    imp: float,
    val: float,
    people: str = "",
    project: str | None = None,
    loc: str = "@work",
    uses: int = 0,
) -> Spec:
    """Build a Spec; ``people`` is space separated, ``topics``/``loc`` use ``|``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    if project is not None and project not in PROJECT_NAMES:
        raise ValueError(f"unknown project {project!r}")
    people_keys = tuple(people.split())
    for key in people_keys:
        if key.startswith("@"):
            if key[1:] not in GROUPS:
                raise ValueError(f"unknown group {key!r}")
        elif key not in PEOPLE:
            raise ValueError(f"unknown person {key!r}")
    topic_list = tuple(t.strip() for t in topics.split("|"))
    if not topic_list or any(not t or t != t.lower() for t in topic_list):
        raise ValueError(f"bad topics {topics!r}")
    return Spec(
        kind=kind,
        texts=(texts,) if isinstance(texts, str) else texts,
        people=people_keys,
        project=project,
        topics=topic_list,
        importance=imp,
        valence=val,
        locations=tuple(loc.split("|")),
        max_uses=uses,
    )


def nums(start: int, stop: int, step: int = 1) -> tuple[str, ...]:
    """Numbers as slot values."""
    return tuple(str(n) for n in range(start, stop, step))


# --------------------------------------------------------------------------
# Slot vocabulary. Templates use {name}; values may contain further {slots}.
# --------------------------------------------------------------------------

SLOTS: dict[str, tuple[str, ...]] = {
    # Atlas
    "atlas_tables": ("38", "41", "43", "47", "52"),
    "atlas_scope_note": (
        "The invoices table alone is 1.8 billion rows.",
        "Three tables are written by a cron job nobody remembers creating.",
        "We can probably drop a dozen tables nobody has read since 2021.",
        "The audit log is the scary one: no primary key at all.",
        "Nobody can tell me what the 'legacy_adj' table is for.",
    ),
    "atlas_design_note": (
        "We landed on keeping invoice IDs stable so downstream reports don't break.",
        "She wants to partition invoices by month, and I think she's right.",
        "We agreed to postpone the currency table cleanup until after the cutover.",
        "Decided that the new schema gets proper time-zone-aware timestamps everywhere.",
        "We'll keep the old column names for now and rename later.",
    ),
    "flow_note": (
        "there are five consumers, not three",
        "the analytics export reads straight from the primary, which has to stop",
        "the refund service writes to two tables in one transaction we can't split",
        "most of the load is one reporting query that runs every minute",
        "the support dashboard quietly depends on a view we wanted to drop",
    ),
    "atlas_idea": (
        "run a shadow read path so we can compare old and new results for a week",
        "publish a tiny status page so finance stops asking for updates",
        "freeze schema changes on the ledger during the migration window",
        "write the rollback runbook before the cutover runbook",
        "compare daily revenue totals between the clusters, not just row counts",
    ),
    "finance_note": (
        "Fair enough, but I can only promise a plan.",
        "Drafting a one-page FAQ for them.",
        "Asked Priya to join the next finance sync.",
        "I'd want the same thing in their shoes.",
    ),
    "legacy_note": (
        "Half the commands reference servers that no longer exist.",
        "Found a note from 2019 saying 'do not restart on Fridays', with no explanation.",
        "The last person who understood the replication setup left two years ago.",
        "Someone wrote 'good luck' at the bottom of the failover page.",
    ),
    "atlas_table": (
        "invoices",
        "invoice_lines",
        "payments",
        "refunds",
        "customer_billing",
        "tax_rates",
        "credit_notes",
        "subscriptions",
    ),
    "mapping_note": (
        "two columns turned out to be unused",
        "the money columns are floats, which made everyone wince",
        "foreign keys are missing in three places",
        "it was cleaner than we feared",
        "one enum has eleven values and four of them mean 'paid'",
    ),
    "lag_ms": nums(35, 140, 5),
    "duration": ("an hour", "two hours", "most of the afternoon", "forty minutes"),
    "review_note": (
        "Clean work; I only had naming nitpicks.",
        "Found one unbounded query that would have locked the table.",
        "Asked for more logging around the batch boundaries.",
        "Approved with two small comments.",
        "Learned a trick or two about batching, honestly.",
    ),
    "oskar_note": (
        "Lag spikes every night at 02:00 when the reporting job runs.",
        "He set alerts to page us only if lag goes above a minute.",
        "It's the prettiest dashboard we own now.",
        "He also found a disk that will fill up in March, so that's nice to know.",
    ),
    "suspicion_note": (
        "Nothing has broken yet, which honestly makes me suspicious.",
        "Everything is green, and I don't trust green.",
        "On track, and I keep waiting for the other shoe to drop.",
    ),
    "mismatch_guess": (
        "rounding in the currency conversion",
        "a timezone issue around midnight",
        "duplicate rows from the retry logic",
        "something in the credit note joins",
        "late-arriving refunds",
    ),
    "incident_note": (
        "Kept it blameless and boring, as it should be.",
        "The timeline section was the hardest part to write.",
        "Jonas asked for it by Friday; done two days early.",
        "The 'what went well' list is longer than I expected.",
    ),
    "early_hour": ("4:10", "4:45", "5:05", "3:50"),
    "worry_note": (
        "If the mismatch is in the source data, we have a bigger problem than Atlas.",
        "Finance will ask about it again on Monday.",
        "I keep replaying the moment the totals didn't match.",
        "Priya seems fine, which helps a little.",
    ),
    "mismatch_progress": (
        "we narrowed it to invoices created close to midnight",
        "the bad rows cluster at day boundaries",
        "it isn't rounding, the totals shift by whole days of revenue",
        "still no pattern, just more spreadsheets",
        "we can reproduce it with a hundred rows now",
    ),
    "jonas_atlas": (
        "He was supportive but wants a date for the second dry run.",
        "I told him honestly that we don't know the root cause yet.",
        "He offered to handle finance for a week, which is a gift.",
        "He asked if we need more people; not yet.",
    ),
    "match_pct": ("99.97", "99.98", "99.99", "100"),
    "mood_note": (
        "Priya is whistling again.",
        "Standups are ten minutes shorter.",
        "Kofi has reached legend status.",
        "Even finance sent a thumbs-up.",
    ),
    "dry2_condition": (
        "a full-size data copy",
        "two clean staging runs",
        "the new regression tests green",
    ),
    "n_steps": nums(28, 47),
    "checklist_note": (
        "We added an explicit abort point at the halfway mark.",
        "Oskar wants a dedicated war-room channel.",
        "Every step now has a named owner and a backup.",
        "We cut three steps that were really just hope.",
    ),
    "jonas_ask_atlas": (
        "a one-line status every 30 minutes during the cutover",
        "finance in the loop the moment billing goes read-only",
        "me to sleep properly the night before",
    ),
    "post_cutover_note": (
        "error rates flat, old cluster read-only",
        "no billing tickets overnight",
        "replication off, invoice queries twice as fast",
        "finance's morning reports ran without a hitch",
    ),
    "snapshot_days": ("30", "60", "90"),
    "thanks_note": (
        "Kofi wrote back with a single cinnamon bun emoji.",
        "Priya says she's taking a long weekend, and she should.",
        "Oskar replied 'never again', then 'okay, maybe again'.",
    ),
    "atlas_lesson": (
        "write the rollback runbook before the cutover runbook",
        "compare totals, not just row counts",
        "never trust timestamps without a time zone",
        "rehearse with full-size data from day one",
        "give finance a status page from the start",
    ),
    # Beacon
    "design_opinion": (
        "I prefer the simplest one; he prefers the prettiest one.",
        "We're going with the version that has per-topic toggles.",
        "All three are good; the problem is scope, not design.",
        "Option B won the hallway test by a mile.",
    ),
    "beacon_weeks": ("three", "four", "five"),
    "estimate_note": (
        "Tighter than I'd like.",
        "iOS is half done already, so Android is the long pole.",
        "She padded it honestly, which I appreciate.",
    ),
    "beacon_idea": (
        "a quiet-hours setting that follows the phone's focus mode",
        "a weekly digest for people who hate notifications",
        "let people snooze a topic for a week instead of turning it off",
        "show a preview of notifications before people opt in",
        "a notification budget per day",
    ),
    "onepager_note": (
        "why now, what we won't do, and how we'll know it worked",
        "the non-goals section ended up the longest",
        "the success metric is an opt-in rate above 40%",
    ),
    "research_quote": (
        "'I turn off notifications from every app on day one.' Ouch.",
        "'Just tell me when something actually needs me.' That's Beacon in one sentence.",
        "'I'd pay to get fewer notifications.' Noted.",
    ),
    "beta_feedback": (
        "people love quiet hours and hate the default sound",
        "the digest is confusing on small screens",
        "someone wrote 'finally' in all caps",
        "three people asked for a snooze button",
        "Android users want per-topic sounds",
    ),
    "beta_count": ("212", "260", "318", "355", "402"),
    "beta_note": (
        "Retention in the beta looks healthy.",
        "Opt-in is higher than we modelled.",
        "The feedback channel is busy in a good way.",
    ),
    "beacon_bug": (
        "the double notification on iOS",
        "the settings toggle that didn't persist",
        "the badge count going negative",
        "a layout bug on small Android screens",
    ),
    "small_win": (
        "Small win, but it was the most reported bug.",
        "She found it in ten minutes; I'd still be looking.",
        "The beta channel noticed within the hour.",
    ),
    "survey_note": (
        "satisfaction is high and discoverability is low",
        "most people never opened the settings screen",
        "the digest splits people right down the middle",
    ),
    "launch_plan_item": (
        "a staged rollout over three days",
        "support macros ready before launch",
        "a blog post plus an in-app announcement",
    ),
    "crash_free_good": ("99.6", "99.7", "99.8"),
    "crash_free_bad": ("97.9", "98.2", "98.4"),
    "crash_note": (
        "it only happens after the app has been in the background for hours",
        "Elin can reproduce it, which is half the battle",
        "it's in the notification service, not our UI code",
        "two phone models account for most of the reports",
    ),
    "slip_note": (
        "We agreed to hold the date for now and decide later this week.",
        "He said a week's slip is fine if it buys quality.",
        "Neither of us wants to slip, and both of us would.",
    ),
    "triage_note": (
        "one root cause, many symptoms",
        "80% of the reports come from two phone models",
        "we closed eleven duplicates",
    ),
    "checklist_item": (
        "support macros",
        "the rollout flag",
        "the release notes",
        "the dashboard alerts",
        "the privacy review",
    ),
    "checklist_item_open": (
        "the store screenshots",
        "the marketing email",
        "the Android staged rollout config",
        "the on-call schedule",
    ),
    "review_wait": (
        "Store review usually takes a day; fingers crossed.",
        "Now we wait.",
        "Set a reminder to check first thing tomorrow.",
    ),
    "prelaunch_feeling": (
        "My stomach is in knots.",
        "Excited and nauseous in equal parts.",
        "I keep refreshing dashboards that don't show anything yet.",
        "Trying to sleep properly this week, and failing.",
    ),
    "support_topic": (
        "how quiet hours work",
        "what to say when someone gets too many notifications",
        "how to escalate a crash report",
    ),
    "metric_note": (
        "opt-in rate at 47%",
        "crash-free sessions at 99.8%",
        "notification opens up 22% on last month",
        "uninstalls flat, which is exactly what we hoped",
    ),
    "ticket_note": (
        "mostly people asking where the quiet-hours setting is",
        "two real bugs, the rest are feature requests",
        "one lovely thank-you from a user who says her phone is finally calm",
    ),
    "afterglow": (
        "Still can't quite believe it went so smoothly.",
        "The team channel is still full of confetti emojis.",
        "Tomás printed the launch graph and taped it to the wall.",
    ),
    "beacon_v2_idea": (
        "smart digests that learn when people actually read",
        "a daily notification budget",
        "letting teams send announcements through Beacon",
        "a 'catch me up' summary after a holiday",
        "quiet hours that follow your calendar",
        "per-device settings for people with a phone and a tablet",
    ),
    "demo_note": (
        "Small fixes, but they add up.",
        "The snooze feature got spontaneous applause.",
        "Ella would call it 'nice and calm'.",
    ),
    "metric_week": (
        "47% opt-in, 99.8% crash-free, and fewer support tickets",
        "opt-in holding at 45% and notification opens up by a fifth",
    ),
    # Hiring
    "n_cv": ("14", "19", "23", "31"),
    "cv_note": (
        "Four look genuinely promising.",
        "A lot of keyword soup and two real gems.",
        "One candidate built a billing system from scratch, which is very relevant.",
    ),
    "hana_note": (
        "she wants us to drop the 'rockstar' language",
        "the salary band needs Jonas's sign-off",
        "we'll do screens on Tuesdays and Thursdays",
    ),
    "takehome_hours": ("two", "three"),
    "hiring_idea": (
        "pair programming instead of a take-home",
        "share the interview questions ahead of time",
        "let candidates meet the team over lunch",
    ),
    "screen_note": (
        "strong on databases, a bit vague on testing",
        "great questions about our on-call setup",
        "nervous at first, then really sharp",
        "impressive CV, less impressive debugging",
        "clear communicator who would grow fast here",
    ),
    "debrief_note": (
        "We're split, so it's a no for now.",
        "Strong yes from Priya, lukewarm from me.",
        "Everyone liked the debugging session.",
    ),
    "interview_fatigue": (
        "Four interviews this week and my focus time is gone.",
        "Worth it, but I'm tired.",
        "Blocking Friday mornings as interview-free time.",
    ),
    "debrief_nadia": (
        "four strong yeses, which never happens",
        "Priya called her the best systems thinker we've interviewed",
        "the only concern is that she might get bored",
    ),
    "nadia_topic": (
        "idempotent payment retries",
        "migrating a ledger without downtime",
        "on-call culture",
    ),
    "reference_note": (
        "glowing, with specific examples",
        "'she makes everyone around her better'",
        "her old manager would rehire her tomorrow",
    ),
    "jonas_offer_note": (
        "He approved in one message.",
        "He wants to meet her first, which is fair.",
        "Approved, with a reminder to keep the bands consistent.",
    ),
    "waiting_note": (
        "Refreshing my inbox like it's launch day.",
        "Hana says silence is normal at this stage.",
        "Trying to be patient.",
    ),
    "nadia_negotiation": (
        "she wants to start after her notice period, which is fine",
        "she asked good questions about the on-call rotation",
        "she's comparing us with a bigger company, but the team is the draw",
    ),
    "onboarding_item": (
        "her first week is pairing with Priya on the billing service",
        "a small Atlas cleanup task as her first PR",
        "coffee with every team lead in the first two weeks",
    ),
    "buddy_note": (
        "She said yes before I finished asking.",
        "Perfect match; they'll talk databases for hours.",
    ),
    "closing_note": (
        "I wrote personal notes to the two finalists",
        "Hana will keep Julia warm for a future role",
    ),
    "nadia_start": ("on December 1",),
    # Roadmap
    "roadmap_input": (
        "support wants better self-service refunds",
        "sales keeps asking for team accounts",
        "we need a real data platform",
        "nobody wants another big rewrite",
        "onboarding is where we lose people",
    ),
    "roadmap_idea": (
        "frame it as three bets and a cleanup year",
        "tie every item to a customer problem, not a feature",
        "put the billing debt up front after Atlas",
        "say clearly what we will stop doing",
    ),
    "lastyear_note": (
        "We promised nine things and shipped four.",
        "The best part was the honest 'what we stopped' section.",
    ),
    "roadmap_pages": ("one page", "two pages"),
    "jonas_roadmap": (
        "No appendix allowed.",
        "He wants a number on every bet.",
        "He'll take it to the board in December.",
    ),
    "draft_ordinal": ("Second", "Third", "Fourth"),
    "cut_item": (
        "the partner API",
        "the admin redesign",
        "half of the analytics ideas",
        "the desktop widget",
    ),
    "budget_note": (
        "two new hires fit, three don't",
        "the cloud bill is the surprise line item",
        "Atlas saves real money on the old cluster licences",
    ),
    "jonas_feedback": (
        "He wants fewer bets and more conviction.",
        "He liked the cleanup-year framing.",
        "He asked where hiring shows up, fair point.",
    ),
    "framing_idea": (
        "start with what customers will feel and end with what we stop doing",
        "one slide per bet with a single metric",
    ),
    "n_action": ("five", "six", "seven", "eight"),
    # General work
    "n_emails": nums(40, 130, 10),
    "inbox_note": (
        "Inbox zero lasted eight minutes.",
        "Most of it was calendar noise.",
        "Found a two-week-old question from finance, oops.",
    ),
    "expense_item": (
        "the September conference",
        "the team lunch",
        "the train tickets from the offsite",
    ),
    "perf_note": (
        "the peer feedback is glowing",
        "I need concrete examples, not adjectives",
        "one clear growth area, which is good",
    ),
    "n_meetings": ("three", "four", "five"),
    "free_block": ("a two-hour focus block", "Thursday afternoon", "Friday morning"),
    "coffee_chat": (
        "mostly complaints about the coffee machine",
        "weekend plans and one good idea for the onboarding docs",
        "rumours about the office move",
    ),
    "office_mood": ("quiet", "loud", "half empty", "buzzing"),
    "office_note": (
        "got a lot done",
        "hard to focus",
        "booked a phone room for the afternoon",
    ),
    "work_idea": (
        "a shared glossary for billing terms",
        "a monthly 'what we stopped doing' email",
        "rotating who runs standup",
        "no meetings on Wednesday mornings, as an experiment",
        "a single status page for all four projects",
    ),
    "blocker": (
        "waiting on legal for the notification copy",
        "the staging database is full again",
        "need Jonas's sign-off on the budget sheet",
        "the CI queue is slow today",
    ),
    "work_todo": (
        "send the Atlas update to finance",
        "review Elin's PR",
        "answer Hana's questions about the team structure",
        "reply to Hana",
        "update the roadmap doc",
        "book a room for the retro",
    ),
    "jonas_topic": (
        "my workload and what to drop",
        "career growth and whether I want a director role",
        "how to give Kofi more visibility",
        "the 2027 budget",
        "team morale after a long month",
    ),
    "jonas_ask": (
        "write a short update for the leadership channel",
        "delegate more of the hiring loop",
        "take a proper day off after the launch",
        "draft the headcount plan",
    ),
    "priya_topic": (
        "She wants to lead more of the architecture work, and she should.",
        "We talked about her conference talk proposal.",
        "She's worried about on-call load after Atlas.",
        "Mostly we talked about her move to a new flat.",
    ),
    "retro_item": (
        "the team wants fewer ad-hoc meetings",
        "a shout-out to Elin for the crash triage",
        "we keep underestimating review time",
        "on-call handovers need a template",
    ),
    "demo_item": (
        "Elin showed the quiet-hours setting",
        "Kofi showed his invoice diff tool",
        "Oskar demoed the new alerts",
        "Tomás walked us through the onboarding flow",
    ),
    # Life
    "run_km": ("5", "6", "7", "8"),
    "run_pace": ("5:40", "5:25", "5:55", "5:15"),
    "run_note": (
        "Legs heavy, head clear.",
        "Cold enough for gloves now.",
        "Saw the heron again by the bridge.",
        "Best thinking I do all day.",
        "The Autumn 10k is {when_life_race}, so every run counts.",
    ),
    "long_km": ("12", "14", "15", "16"),
    "breakfast_note": (
        "Ella wanted pancakes and got porridge",
        "Daniel burned the toast while reading the news",
        "Ella negotiated screen time like a lawyer",
        "nobody could find Ella's left shoe",
    ),
    "dropoff_note": (
        "she ran in without looking back",
        "her teacher reminded me about the parent-teacher meeting",
        "she insisted on carrying her own bag",
    ),
    "train_note": (
        "a man reading a paper map, which felt very 1995",
        "the train was late again, so I read",
        "answered emails so the morning starts clean",
        "watched the fog over the lake instead of my phone",
    ),
    "lunch_topic": (
        "their weekend",
        "the office move rumours",
        "Atlas, of course",
        "favourite podcasts",
        "the best cinnamon bun in town",
    ),
    "desk_lunch": ("leftover {dish}", "a sad sandwich", "soup from the place downstairs"),
    "walk_place": ("the canal", "the park behind the office", "the old harbour"),
    "walk_note": (
        "the leaves are almost all gone",
        "came back with a clearer head",
        "called Mom on the way",
    ),
    "ella_school": (
        "a classmate's hamster escaping",
        "learning about volcanoes",
        "a fight over the swings",
        "her new best friend, Alva",
        "the school play",
    ),
    "ella_subject": ("maths", "reading", "spelling", "science"),
    "homework_note": (
        "she understood it faster than I did",
        "tears, then triumph",
        "we turned it into a game",
    ),
    "chapter": nums(3, 15),
    "kids_book": ("Ronia, the Robber's Daughter", "The Wild Robot", "Matilda"),
    "bedtime_note": (
        "She fell asleep halfway through.",
        "She asked for 'one more chapter' three times.",
        "She did all the voices herself tonight.",
    ),
    "daniel_news": (
        "finally fixed the squeaky door",
        "got good news about his project at work",
        "is planning a surprise date for Saturday",
        "has started baking bread, again",
    ),
    "daniel_talk": (
        "whether we need a bigger car",
        "his parents visiting at Christmas",
        "how tired we both are",
        "a trip next summer",
    ),
    "dish": (
        "mushroom risotto",
        "lentil soup",
        "Thai green curry",
        "salmon with potatoes",
        "homemade pizza",
        "a big pot of chili",
        "cardamom buns",
    ),
    "cook_note": (
        "Ella ate everything, a rare win",
        "a bit too much salt, but Daniel says it's perfect",
        "new recipe, and a keeper",
        "made enough for lunch tomorrow",
    ),
    "mom_news": (
        "She saw the doctor about her knee; it's arthritis.",
        "She wants to learn video calls properly.",
        "Her neighbour's cat has more or less moved in with her.",
        "She's reading the same crime series as me.",
    ),
    "pharmacy_item": (
        "Ella's allergy medicine",
        "painkillers",
        "plasters and a thermometer",
        "vitamin D",
    ),
    "grocery_list": (
        "milk, oats, apples, coffee, and far too much cheese",
        "everything for {dish} plus snacks for Ella's class trip",
        "the usual, plus flowers for no reason",
    ),
    "bar": ("Bar Nova", "Vinkällaren"),
    "sofia_news": (
        "thinking about quitting her job to open a bakery",
        "finally moving in with Amira",
        "training for a triathlon, which is insane",
        "back from Lisbon with a tan",
    ),
    "leo_topic": (
        "our 10k race plan",
        "his new running shoes",
        "the derby on Sunday",
        "whether a 5:20 pace is realistic",
    ),
    "pages": nums(20, 65, 5),
    "book_note": (
        "The ending is coming and I'm not ready.",
        "Ingrid will love this part.",
        "Slow middle, but the writing is beautiful.",
        "Marked a passage for book club.",
    ),
    "sleep_note": (
        "my brain kept running through tomorrow's meetings",
        "Ella crawled into our bed at 3am",
        "too much coffee after four, my own fault",
    ),
    "steps": nums(2100, 4600, 300),
    "steps_note": (
        "Desk days are brutal.",
        "Tomorrow I'm taking the stairs.",
        "Need to walk the long way home.",
    ),
    "feeling": (
        "stretched thin at work",
        "optimistic about the projects",
        "tired but okay",
        "scattered",
        "proud of the team",
    ),
    "feeling_note": (
        "Too many parallel threads.",
        "The projects are finally moving.",
        "I need a quiet weekend.",
        "Writing it down helps.",
    ),
    "life_idea": (
        "a family board game night every Friday",
        "a shared grocery list app for Daniel and me",
        "take Ella to see the northern lights one day",
        "start a running streak in December",
    ),
    "life_todo": (
        "book Ella's swimming lessons",
        "renew the car insurance",
        "buy a birthday card for Daniel's sister",
        "sign Ella's school trip form",
        "call the plumber about the kitchen sink",
    ),
    "evening_slack": (
        "Everything is fine, obviously.",
        "Answered one message and regretted it.",
        "Muted the channel until morning.",
    ),
    "gym_session": (
        "squats and rows, nothing fancy",
        "a short circuit class",
        "more stretching than lifting",
    ),
    "market_haul": (
        "apples, mushrooms, and a pumpkin Ella chose",
        "sourdough and far too many cheeses",
        "kale and a jar of lingonberry jam",
    ),
    "outing": (
        "the science museum",
        "the climbing gym",
        "the library",
        "the playground by the lake",
        "the cinema",
    ),
    "outing_note": (
        "She wants to be a volcanologist now.",
        "She climbed higher than I dared.",
        "We came home with seven books.",
        "Muddy, happy, exhausted.",
    ),
    "friends_note_lower": (
        "Leo talked about the race all night",
        "Daniel made his famous cardamom buns",
        "Ella stayed up far too late",
    ),
    "museum_note": (
        "she read every single sign",
        "the earthquake room was the hit",
        "two hours, zero complaints",
    ),
    "climbing_note": (
        "she reached the top twice",
        "I was the nervous one",
        "she wants a birthday party there",
    ),
    "library_note": (
        "she picked a book about octopuses",
        "we stayed for story hour",
        "she got her own card",
    ),
    "playground_note": (
        "Ella won",
        "Daniel won, then claimed a hamstring injury",
        "everyone needed a bath after",
    ),
    "board_game": ("Ticket to Ride", "Uno", "memory", "Carcassonne"),
    "bake": ("banana bread", "oat cookies", "a lopsided apple cake"),
    "bake_note": (
        "Flour everywhere.",
        "She measured everything twice.",
        "Half the dough never made it to the oven.",
    ),
    "bike_dest": ("the lake", "the harbour", "the old windmill"),
    "bike_note": (
        "Ella cycled the whole way herself",
        "hot chocolate at the turning point",
        "headwind both ways, somehow",
    ),
    "walk_talk": (
        "We should do that more.",
        "Talked about everything except work.",
        "Two hours felt like ten minutes.",
    ),
    "big_dish": (
        "slow-cooked beef stew",
        "cinnamon buns from scratch",
        "vegetable lasagne for the week",
    ),
    "friends_note": (
        "Leo talked about the race all night.",
        "Sofia brought photos of her new flat.",
        "We laughed until midnight.",
        "Good wine, better company.",
    ),
    "chore": (
        "vacuumed and cleaned the fridge",
        "sorted Ella's outgrown clothes",
        "swapped the summer duvets for winter ones",
        "fixed the bike light",
    ),
    "chore_note": (
        "Satisfying.",
        "Took twice as long as planned.",
        "Daniel handled the laundry mountain.",
    ),
    "weekly_review": (
        "the week was heavy on {week_focus}, so next week I protect two focus mornings",
        "three wins, one miss, and too little sleep",
        "I need to say no to more meetings",
        "I'm writing down what went well, because I forget",
    ),
    "week_focus": ("Atlas", "Beacon", "interviews", "meetings"),
    "lazy_thing": ("the weekend paper", "a crossword", "an old podcast episode", "nothing at all"),
    "cph_place": ("Nyhavn", "the King's Garden", "Tivoli", "the harbour baths"),
    "trip_note": (
        "Ella counted boats.",
        "Cold wind, warm cinnamon snails.",
        "Daniel took two hundred photos.",
    ),
    "ella_verdict": (
        "'the buses are cooler than ours.'",
        "'the playgrounds are better.'",
        "'can we live here?'",
    ),
    "cph_food": (
        "a tiny smørrebrød place",
        "a street food hall",
        "a bakery with a queue around the corner",
    ),
    "trip_food_lower": ("Ella ate three pastries", "best meal of the month", "worth the queue"),
    "souvenir": ("a tea towel with herrings on it", "Danish licorice", "a small ceramic cup"),
    "trip_reflection": (
        "First day in weeks without thinking about Atlas or Beacon. Didn't know I needed it.",
        "My feet hurt from walking and I don't care.",
        "Daniel and I talked about nothing important for a whole afternoon. Bliss.",
        "Phone on flight mode most of the day. Nobody died.",
    ),
    "trip_food_note": ("Best meal of the month.", "Ella ate three pastries.", "Worth the queue."),
    "trip_slack": (
        "nothing urgent, so the laptop is closed again",
        "Elin has it under control",
        "one question from Kofi that could wait",
    ),
    "race_time": ("52:41",),
    "club_note": (
        "Ingrid had strong opinions, as always.",
        "Sofia loved it, I was lukewarm.",
        "We argued about the ending for an hour.",
        "Best discussion we've had all year.",
    ),
}

# Per project and phase: status lines for standups and priorities for planning.
PHASE_SLOTS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "atlas": {
        "pre": {
            "status": (
                "the Atlas kickoff is this afternoon",
                "Priya is prepping the Atlas kickoff",
            ),
            "priority": ("getting Atlas off to a clean start",),
        },
        "design": {
            "status": (
                "Priya is still mapping ledger tables",
                "Kofi is profiling the biggest billing tables",
                "Oskar is sizing the new cluster",
            ),
            "priority": ("a signed-off Atlas scope", "the Atlas target schema"),
        },
        "build": {
            "status": (
                "dual-write is stable on {atlas_table}",
                "Kofi is mapping {atlas_table}",
                "Priya is preparing the first dry run",
            ),
            "priority": (
                "getting Atlas ready for the first dry run",
                "dual-write on the remaining tables",
            ),
        },
        "problems": {
            "status": (
                "the invoice mismatch is still open",
                "Kofi is diffing invoices row by row",
                "Priya wrote the rollback postmortem",
            ),
            "priority": ("finding the Atlas invoice mismatch", "keeping finance calm about Atlas"),
        },
        "fixing": {
            "status": (
                "the timezone fix is in review",
                "the backfill on staging looks clean",
                "Oskar is rehearsing cutover steps",
            ),
            "priority": ("the Atlas backfill fix", "a date for the second dry run"),
        },
        "rehearsal": {
            "status": (
                "the cutover runbook is final",
                "the second dry run results still hold",
                "Priya is on point for cutover prep",
            ),
            "priority": ("a boring Atlas cutover", "the cutover runbook"),
        },
        "done": {
            "status": (
                "the old cluster is read-only",
                "Oskar is scheduling the decommission",
                "no billing errors since the cutover",
            ),
            "priority": ("closing out Atlas properly",),
        },
    },
    "beacon": {
        "pre": {
            "status": ("the Beacon kickoff is coming up", "Tomás is sketching ideas for Beacon"),
            "priority": ("a good Beacon kickoff",),
        },
        "design": {
            "status": (
                "Tomás is iterating on the settings screen",
                "Elin is spiking the Android notification service",
                "the Beacon design review is this week",
            ),
            "priority": ("locking the Beacon design", "the Beacon one-pager"),
        },
        "beta": {
            "status": (
                "Beacon beta feedback is pouring in",
                "Elin is fixing {beacon_bug}",
                "Tomás is running the beta survey",
            ),
            "priority": ("learning from the Beacon beta", "a realistic launch plan"),
        },
        "crisis": {
            "status": (
                "the Android crash is still unresolved",
                "Elin is bisecting the crash",
                "we're holding the Beacon launch date for now",
            ),
            "priority": ("the Android crash, nothing else", "deciding whether Beacon slips"),
        },
        "prep": {
            "status": (
                "the crash fix is holding in beta",
                "the Beacon release checklist is nearly done",
                "Beacon support training is booked",
            ),
            "priority": ("a calm Beacon launch", "the go-live checklist"),
        },
        "live": {
            "status": (
                "Beacon numbers look good",
                "Elin is shipping small post-launch fixes",
                "Tomás is collecting feedback for v2",
            ),
            "priority": ("post-launch Beacon fixes", "Beacon v2 ideas"),
        },
    },
    "hiring": {
        "pre": {
            "status": ("the job post is nearly ready",),
            "priority": ("getting the job post out",),
        },
        "sourcing": {
            "status": ("Hana is sourcing", "CVs are coming in"),
            "priority": ("filling the interview pipeline",),
        },
        "interviewing": {
            "status": ("two phone screens this week", "feedback is due for two candidates"),
            "priority": ("keeping interviews moving",),
        },
        "shortlist": {
            "status": ("Nadia is the front-runner", "references for Nadia are in progress"),
            "priority": ("an offer for Nadia",),
        },
        "offer": {
            "status": ("waiting on Nadia's answer",),
            "priority": ("closing Nadia",),
        },
        "onboarding": {
            "status": ("Nadia's onboarding plan is drafted",),
            "priority": ("Nadia's onboarding plan",),
        },
    },
    "roadmap": {
        "pre": {"status": ("roadmap work hasn't started",), "priority": ("roadmap scoping",)},
        "input": {
            "status": ("roadmap input interviews continue",),
            "priority": ("collecting roadmap input",),
        },
        "draft": {
            "status": ("the roadmap draft is circulating",),
            "priority": ("the 2027 roadmap draft",),
        },
        "final": {
            "status": ("the roadmap is approved",),
            "priority": ("turning the roadmap into a plan",),
        },
    },
}

# --------------------------------------------------------------------------
# Project pools: phase -> specs for filler work episodes.
# --------------------------------------------------------------------------

A, B, H, R = "atlas", "beacon", "hiring", "roadmap"
TOP_ATLAS = "database migration"
TOP_BEACON = "launch"

PROJECT_POOLS: dict[str, dict[str, tuple[Spec, ...]]] = {
    "atlas": {
        "design": (
            sp(
                "task",
                (
                    "Drafted the Atlas scope doc: {atlas_tables} tables in the billing ledger, "
                    "and only half have a clear owner.",
                    "Went through the billing ledger table by table for the Atlas scope doc. "
                    "{atlas_scope_note}",
                ),
                project=A,
                topics=f"{TOP_ATLAS}|planning|documentation",
                imp=0.5,
                val=0.1,
                uses=2,
            ),
            sp(
                "meeting",
                (
                    "Quick call with Priya about Atlas. {atlas_design_note}",
                    "Priya and I argued, nicely, about the Atlas target schema. "
                    "{atlas_design_note}",
                ),
                people="priya",
                project=A,
                topics=f"{TOP_ATLAS}|schema design",
                imp=0.5,
                val=0.2,
            ),
            sp(
                "meeting",
                "Whiteboard session with Kofi on the data flows out of the billing ledger: "
                "{flow_note}.",
                people="kofi",
                project=A,
                topics=f"{TOP_ATLAS}|data flows",
                imp=0.45,
                val=0.1,
                uses=2,
            ),
            sp(
                "idea",
                "Atlas idea: {atlas_idea}.",
                project=A,
                topics=f"{TOP_ATLAS}|ideas",
                imp=0.4,
                val=0.35,
            ),
            sp(
                "task",
                "Todo: get capacity numbers for the new cluster from Oskar by {next_weekday}.",
                people="oskar",
                project=A,
                topics=f"capacity planning|{TOP_ATLAS}",
                imp=0.35,
                val=0.0,
                uses=1,
            ),
            sp(
                "note",
                "Finance wants a written promise that Atlas won't touch month-end close. "
                "{finance_note}",
                project=A,
                topics=f"finance|{TOP_ATLAS}",
                imp=0.55,
                val=-0.2,
                uses=2,
            ),
            sp(
                "note",
                "Read the old runbooks for the billing cluster. {legacy_note}",
                project=A,
                topics=f"{TOP_ATLAS}|legacy systems|documentation",
                imp=0.35,
                val=-0.15,
                uses=2,
            ),
        ),
        "build": (
            sp(
                "task",
                "Kofi finished the schema mapping for {atlas_table}: {mapping_note}.",
                people="kofi",
                project=A,
                topics=f"{TOP_ATLAS}|schema design",
                imp=0.5,
                val=0.25,
            ),
            sp(
                "note",
                "Dual-write is running for {atlas_table}. Replication lag hovers around {lag_ms} "
                "ms, fine for now.",
                project=A,
                topics=f"replication|{TOP_ATLAS}",
                imp=0.45,
                val=0.2,
            ),
            sp(
                "task",
                "Spent {duration} reviewing Priya's migration scripts. {review_note}",
                people="priya",
                project=A,
                topics=f"code review|{TOP_ATLAS}",
                imp=0.45,
                val=0.15,
            ),
            sp(
                "note",
                "Checked Oskar's replication lag dashboard. {oskar_note}",
                people="oskar",
                project=A,
                topics=f"monitoring|{TOP_ATLAS}",
                imp=0.4,
                val=0.3,
            ),
            sp(
                "note",
                (
                    "Atlas check-in. {suspicion_note}",
                    "Dual-write week two for Atlas. {suspicion_note}",
                ),
                project=A,
                topics=f"{TOP_ATLAS}|stress",
                imp=0.35,
                val=0.05,
                uses=3,
            ),
            sp(
                "task",
                "The first Atlas dry run is booked {when_atlas_dry1}. Priya wants a full copy of "
                "production data for it.",
                people="priya",
                project=A,
                topics=f"{TOP_ATLAS}|dry run|planning",
                imp=0.6,
                val=0.1,
                uses=2,
            ),
            sp(
                "idea",
                "Atlas idea: {atlas_idea}.",
                project=A,
                topics=f"{TOP_ATLAS}|ideas",
                imp=0.4,
                val=0.3,
            ),
        ),
        "problems": (
            sp(
                "note",
                "Still untangling the invoice mismatch from {ref_atlas}. Kofi suspects "
                "{mismatch_guess}.",
                people="kofi",
                project=A,
                topics=f"{TOP_ATLAS}|data validation|incident",
                imp=0.7,
                val=-0.45,
            ),
            sp(
                "note",
                "Finance asked whether the Atlas problems will affect month-end close. I promised "
                "a clear answer by {next_weekday}.",
                project=A,
                topics=f"finance|{TOP_ATLAS}",
                imp=0.6,
                val=-0.4,
                uses=2,
            ),
            sp(
                "task",
                "Wrote the incident summary for the Atlas rollback. {incident_note}",
                project=A,
                topics=f"incident|{TOP_ATLAS}|documentation",
                imp=0.6,
                val=-0.1,
                uses=1,
            ),
            sp(
                "note",
                (
                    "Woke up at {early_hour} thinking about the invoice mismatch. Not great.",
                    "Can't stop thinking about Atlas. {worry_note}",
                ),
                project=A,
                topics=f"stress|{TOP_ATLAS}|sleep",
                imp=0.5,
                val=-0.6,
            ),
            sp(
                "meeting",
                "Pairing session with Kofi on the mismatch: {mismatch_progress}.",
                people="kofi",
                project=A,
                topics=f"{TOP_ATLAS}|data validation",
                imp=0.6,
                val=-0.1,
            ),
            sp(
                "meeting",
                "Jonas stopped by to ask about Atlas after {ref_atlas}. {jonas_atlas}",
                people="jonas",
                project=A,
                topics=f"{TOP_ATLAS}|management",
                imp=0.55,
                val=-0.15,
                uses=2,
            ),
        ),
        "fixing": (
            sp(
                "task",
                "The backfill fix works on staging: {match_pct}% of invoice rows now match "
                "exactly.",
                project=A,
                topics=f"{TOP_ATLAS}|data validation|backfill",
                imp=0.65,
                val=0.6,
            ),
            sp(
                "task",
                "Reviewed Kofi's timezone fix for the ledger import. {review_note}",
                people="kofi",
                project=A,
                topics=f"code review|{TOP_ATLAS}|timezones",
                imp=0.5,
                val=0.35,
                uses=2,
            ),
            sp(
                "note",
                "Since {ref_atlas}, the mood on Atlas has flipped. {mood_note}",
                people="kofi",
                project=A,
                topics=f"{TOP_ATLAS}|team",
                imp=0.45,
                val=0.6,
            ),
            sp(
                "task",
                "The second Atlas dry run is scheduled {when_atlas_dry2}. Priya wants "
                "{dry2_condition} first.",
                people="priya",
                project=A,
                topics=f"{TOP_ATLAS}|dry run|planning",
                imp=0.6,
                val=0.2,
                uses=2,
            ),
            sp(
                "task",
                "Wrote the cutover runbook with Oskar: {n_steps} steps, each with an owner and a "
                "rollback.",
                people="oskar",
                project=A,
                topics=f"{TOP_ATLAS}|cutover|documentation",
                imp=0.6,
                val=0.25,
                uses=1,
            ),
            sp(
                "note",
                (
                    "Added a regression test for invoices created between 23:00 and 01:00. It "
                    "should have existed years ago.",
                    "We now test invoices around midnight in three time zones. Lesson learned the "
                    "hard way.",
                ),
                project=A,
                topics=f"testing|{TOP_ATLAS}|timezones",
                imp=0.45,
                val=0.2,
                uses=2,
            ),
        ),
        "rehearsal": (
            sp(
                "note",
                "Since {ref_atlas}, everyone on Atlas is noticeably calmer. Cutover is "
                "{when_atlas_cutover}.",
                project=A,
                topics=f"{TOP_ATLAS}|cutover",
                imp=0.55,
                val=0.45,
            ),
            sp(
                "meeting",
                "Cutover checklist review with Priya and Oskar. {checklist_note}",
                people="priya oskar",
                project=A,
                topics=f"cutover|{TOP_ATLAS}|planning",
                imp=0.65,
                val=0.2,
                uses=2,
            ),
            sp(
                "task",
                "Sent the cutover notice to finance and support: billing goes read-only for about "
                "an hour {when_atlas_cutover}.",
                project=A,
                topics=f"cutover|finance|{TOP_ATLAS}",
                imp=0.6,
                val=0.0,
                uses=1,
            ),
            sp(
                "meeting",
                "Talked Atlas cutover logistics with Jonas; he wants {jonas_ask_atlas}.",
                people="jonas",
                project=A,
                topics=f"cutover|{TOP_ATLAS}|management",
                imp=0.55,
                val=0.1,
                uses=1,
            ),
            sp(
                "note",
                "Atlas cutover is {when_atlas_cutover}. {prelaunch_feeling}",
                project=A,
                topics=f"stress|cutover|{TOP_ATLAS}",
                imp=0.55,
                val=-0.3,
            ),
        ),
        "done": (
            sp(
                "note",
                "Post-cutover check on Atlas: {post_cutover_note}.",
                project=A,
                topics=f"{TOP_ATLAS}|monitoring",
                imp=0.6,
                val=0.6,
            ),
            sp(
                "task",
                "Planning the decommission of the old billing cluster. Oskar wants to keep "
                "snapshots for {snapshot_days} days.",
                people="oskar",
                project=A,
                topics=f"{TOP_ATLAS}|decommission",
                imp=0.45,
                val=0.3,
                uses=2,
            ),
            sp(
                "note",
                (
                    "Finance ran their reports on the new database and didn't notice a thing. "
                    "Best possible outcome.",
                    "Still no billing complaints since {ref_atlas}. Boring is beautiful.",
                ),
                project=A,
                topics=f"finance|{TOP_ATLAS}",
                imp=0.5,
                val=0.7,
                uses=2,
            ),
            sp(
                "task",
                "Wrote thank-you notes to Priya, Kofi and Oskar for Atlas. {thanks_note}",
                people="priya kofi oskar",
                project=A,
                topics=f"{TOP_ATLAS}|team|gratitude",
                imp=0.5,
                val=0.85,
                uses=1,
            ),
            sp(
                "idea",
                "Lesson from Atlas for next time: {atlas_lesson}.",
                project=A,
                topics=f"{TOP_ATLAS}|lessons learned",
                imp=0.5,
                val=0.3,
            ),
        ),
    },
    "beacon": {
        "design": (
            sp(
                "meeting",
                "Design review with Tomás: three options for the notification settings screen. "
                "{design_opinion}",
                people="tomas",
                project=B,
                topics=f"design review|{TOP_BEACON}|notifications",
                imp=0.55,
                val=0.35,
                uses=2,
            ),
            sp(
                "task",
                "Elin estimated {beacon_weeks} weeks for the Android side of Beacon. "
                "{estimate_note}",
                people="elin",
                project=B,
                topics=f"estimates|{TOP_BEACON}|android",
                imp=0.5,
                val=0.0,
                uses=1,
            ),
            sp(
                "idea",
                "Beacon idea: {beacon_idea}.",
                project=B,
                topics=f"notifications|ideas|{TOP_BEACON}",
                imp=0.4,
                val=0.4,
            ),
            sp(
                "task",
                "Wrote the Beacon one-pager: {onepager_note}.",
                project=B,
                topics=f"{TOP_BEACON}|documentation|planning",
                imp=0.5,
                val=0.25,
                uses=1,
            ),
            sp(
                "note",
                "User research clip that stuck with me: {research_quote}",
                project=B,
                topics=f"user research|notifications|{TOP_BEACON}",
                imp=0.45,
                val=0.2,
                uses=2,
            ),
            sp(
                "task",
                "Todo: get legal to review the Beacon notification copy by {next_weekday}.",
                project=B,
                topics=f"legal|{TOP_BEACON}",
                imp=0.35,
                val=-0.05,
                uses=1,
            ),
        ),
        "beta": (
            sp(
                "note",
                "Beacon beta feedback: {beta_feedback}.",
                project=B,
                topics=f"beta feedback|{TOP_BEACON}|notifications",
                imp=0.5,
                val=0.35,
            ),
            sp(
                "note",
                "{beta_count} people in the Beacon beta now. {beta_note}",
                project=B,
                topics=f"beta feedback|{TOP_BEACON}|metrics",
                imp=0.5,
                val=0.5,
            ),
            sp(
                "task",
                "Elin fixed {beacon_bug}. {small_win}",
                people="elin",
                project=B,
                topics=f"bugs|{TOP_BEACON}",
                imp=0.45,
                val=0.45,
            ),
            sp(
                "meeting",
                "Tomás and I went through the beta survey: {survey_note}.",
                people="tomas",
                project=B,
                topics=f"beta feedback|user research|{TOP_BEACON}",
                imp=0.5,
                val=0.2,
                uses=2,
            ),
            sp(
                "task",
                "Drafted the Beacon launch plan, starting with {launch_plan_item}.",
                project=B,
                topics=f"{TOP_BEACON}|planning",
                imp=0.6,
                val=0.3,
                uses=1,
            ),
            sp(
                "note",
                "Crash-free rate in the Beacon beta is {crash_free_good}%. Good, but Android is "
                "noisier than iOS.",
                project=B,
                topics=f"quality|android|{TOP_BEACON}",
                imp=0.5,
                val=0.1,
            ),
            sp(
                "idea",
                "Beacon idea: {beacon_idea}.",
                project=B,
                topics=f"notifications|ideas|{TOP_BEACON}",
                imp=0.4,
                val=0.4,
            ),
        ),
        "crisis": (
            sp(
                "note",
                "The Android crash Elin reproduced {when_beacon_crash} is still the top issue: "
                "{crash_note}.",
                people="elin",
                project=B,
                topics=f"crash bug|android|{TOP_BEACON}",
                imp=0.8,
                val=-0.55,
            ),
            sp(
                "meeting",
                "Talked with Jonas about slipping the Beacon launch. {slip_note}",
                people="jonas",
                project=B,
                topics=f"{TOP_BEACON}|deadline|management",
                imp=0.75,
                val=-0.35,
                uses=1,
            ),
            sp(
                "note",
                "Beacon launches {when_beacon_launch} and the crash-free rate is "
                "{crash_free_bad}%. Trying not to panic.",
                project=B,
                topics=f"stress|deadline|{TOP_BEACON}",
                imp=0.75,
                val=-0.7,
            ),
            sp(
                "task",
                "Triaged Beacon crash reports with Elin: {triage_note}.",
                people="elin",
                project=B,
                topics=f"crash bug|triage|{TOP_BEACON}",
                imp=0.7,
                val=-0.2,
            ),
            sp(
                "note",
                "Deadline stress is real this week. {prelaunch_feeling}",
                project=B,
                topics=f"stress|deadline|{TOP_BEACON}",
                imp=0.55,
                val=-0.65,
            ),
        ),
        "prep": (
            sp(
                "task",
                "Beacon go-live checklist: {checklist_item} done, {checklist_item_open} still "
                "open.",
                project=B,
                topics=f"{TOP_BEACON}|checklist",
                imp=0.65,
                val=0.15,
            ),
            sp(
                "task",
                "Submitted the Beacon build for store review. {review_wait}",
                people="elin",
                project=B,
                topics=f"app store|{TOP_BEACON}",
                imp=0.7,
                val=0.2,
                uses=1,
            ),
            sp(
                "task",
                (
                    "Wrote the Beacon launch announcement; Tomás made the screenshots look great.",
                    "Second pass on the Beacon announcement. Tomás's screenshots carry it.",
                ),
                people="tomas",
                project=B,
                topics=f"{TOP_BEACON}|communication",
                imp=0.5,
                val=0.45,
                uses=2,
            ),
            sp(
                "note",
                "Since Elin's crash fix {when_beacon_fix}, the crash-free rate is back at "
                "{crash_free_good}%. Launch is {when_beacon_launch}.",
                people="elin",
                project=B,
                topics=f"quality|{TOP_BEACON}",
                imp=0.65,
                val=0.5,
            ),
            sp(
                "note",
                "Beacon launch is {when_beacon_launch}. {prelaunch_feeling}",
                project=B,
                topics=f"stress|deadline|{TOP_BEACON}",
                imp=0.7,
                val=-0.3,
            ),
            sp(
                "meeting",
                "Support training for Beacon: walked the support team through {support_topic}.",
                project=B,
                topics=f"support|{TOP_BEACON}|training",
                imp=0.5,
                val=0.25,
                uses=1,
            ),
        ),
        "live": (
            sp(
                "note",
                "Beacon day {launch_day_n}: {metric_note}.",
                project=B,
                topics=f"metrics|{TOP_BEACON}",
                imp=0.65,
                val=0.7,
            ),
            sp(
                "task",
                "Read through support tickets about Beacon: {ticket_note}.",
                project=B,
                topics=f"support|{TOP_BEACON}|feedback",
                imp=0.5,
                val=0.4,
                uses=3,
            ),
            sp(
                "note",
                "Still smiling about the Beacon launch {when_beacon_launch}. {afterglow}",
                project=B,
                topics=f"{TOP_BEACON}|joy",
                imp=0.55,
                val=0.85,
                uses=3,
            ),
            sp(
                "idea",
                "Beacon follow-up idea: {beacon_v2_idea}.",
                project=B,
                topics=f"ideas|{TOP_BEACON}|notifications",
                imp=0.45,
                val=0.45,
            ),
            sp(
                "meeting",
                "Tomás and Elin demoed this week's Beacon fixes. {demo_note}",
                people="tomas elin",
                project=B,
                topics=f"demo|{TOP_BEACON}",
                imp=0.45,
                val=0.55,
                uses=2,
            ),
        ),
    },
    "hiring": {
        "sourcing": (
            sp(
                "task",
                "Hana sent over {n_cv} CVs for the backend role. {cv_note}",
                people="hana",
                project=H,
                topics="hiring|cv screening",
                imp=0.45,
                val=0.2,
                uses=2,
            ),
            sp(
                "meeting",
                "Sync with Hana on the backend role: {hana_note}.",
                people="hana",
                project=H,
                topics="hiring|recruiting",
                imp=0.4,
                val=0.1,
            ),
            sp(
                "task",
                "Rewrote the take-home exercise so it takes {takehome_hours} hours instead of a "
                "whole weekend.",
                project=H,
                topics="hiring|interviews",
                imp=0.4,
                val=0.3,
                uses=1,
            ),
            sp(
                "idea",
                "Hiring idea: {hiring_idea}.",
                project=H,
                topics="hiring|ideas",
                imp=0.35,
                val=0.3,
            ),
        ),
        "interviewing": (
            sp(
                "meeting",
                "Phone screen with {candidate}: {screen_note}.",
                people="@candidate",
                project=H,
                topics="interviews|hiring",
                imp=0.5,
                val=0.2,
            ),
            sp(
                "meeting",
                "Interview debrief about {candidate} with Hana and Priya. {debrief_note}",
                people="hana priya @candidate",
                project=H,
                topics="interviews|hiring|debrief",
                imp=0.5,
                val=0.05,
            ),
            sp(
                "task",
                "Wrote up interview feedback for {candidate} before the details fade.",
                people="@candidate",
                project=H,
                topics="interviews|hiring",
                imp=0.35,
                val=0.0,
            ),
            sp(
                "note",
                "Interviewing eats my calendar. {interview_fatigue}",
                project=H,
                topics="interviews|hiring|time management",
                imp=0.35,
                val=-0.25,
                uses=2,
            ),
        ),
        "shortlist": (
            sp(
                "meeting",
                "Debrief for Nadia's onsite with Hana and Priya: {debrief_nadia}.",
                people="hana priya nadia",
                project=H,
                topics="hiring|debrief|interviews",
                imp=0.65,
                val=0.65,
                uses=1,
            ),
            sp(
                "note",
                "Nadia's answer about {nadia_topic} keeps coming back to me. She's the one.",
                people="nadia",
                project=H,
                topics="hiring|interviews",
                imp=0.55,
                val=0.6,
                uses=1,
            ),
            sp(
                "task",
                "Reference call for Nadia with her former manager: {reference_note}.",
                people="nadia",
                project=H,
                topics="hiring|references",
                imp=0.55,
                val=0.55,
                uses=1,
            ),
            sp(
                "meeting",
                "Phone screen with {candidate}: {screen_note}.",
                people="@candidate",
                project=H,
                topics="interviews|hiring",
                imp=0.45,
                val=0.15,
            ),
            sp(
                "task",
                "Asked Jonas to approve the senior band for Nadia's offer. {jonas_offer_note}",
                people="jonas nadia",
                project=H,
                topics="hiring|offer|budget",
                imp=0.6,
                val=0.3,
                uses=1,
            ),
        ),
        "offer": (
            sp(
                "note",
                "Still no answer from Nadia on the offer. {waiting_note}",
                people="nadia",
                project=H,
                topics="hiring|offer",
                imp=0.6,
                val=-0.2,
                uses=2,
            ),
            sp(
                "meeting",
                "Hana talked to Nadia: {nadia_negotiation}.",
                people="hana nadia",
                project=H,
                topics="hiring|offer|negotiation",
                imp=0.6,
                val=0.2,
                uses=1,
            ),
            sp(
                "task",
                "Sketched an onboarding plan, just in case Nadia says yes.",
                people="nadia",
                project=H,
                topics="onboarding|hiring",
                imp=0.4,
                val=0.3,
                uses=1,
            ),
        ),
        "onboarding": (
            sp(
                "task",
                "Onboarding plan for Nadia: {onboarding_item}.",
                people="nadia",
                project=H,
                topics="onboarding|hiring",
                imp=0.5,
                val=0.5,
                uses=3,
            ),
            sp(
                "task",
                "Asked Priya to be Nadia's onboarding buddy. {buddy_note}",
                people="priya nadia",
                project=H,
                topics="onboarding|mentoring",
                imp=0.45,
                val=0.6,
                uses=1,
            ),
            sp(
                "note",
                "Closed out the other backend candidates kindly; {closing_note}.",
                people="hana",
                project=H,
                topics="hiring|candidates",
                imp=0.35,
                val=0.1,
                uses=1,
            ),
            sp(
                "task",
                "Ordered Nadia's laptop and requested her accounts for her start {nadia_start}.",
                people="nadia",
                project=H,
                topics="onboarding|admin",
                imp=0.35,
                val=0.3,
                uses=1,
            ),
        ),
    },
    "roadmap": {
        "input": (
            sp(
                "meeting",
                "Collected roadmap input from {colleague}: {roadmap_input}.",
                people="@colleague",
                project=R,
                topics="roadmap|planning",
                imp=0.5,
                val=0.2,
            ),
            sp(
                "idea",
                "Roadmap thought: {roadmap_idea}.",
                project=R,
                topics="roadmap|ideas|strategy",
                imp=0.5,
                val=0.35,
            ),
            sp(
                "task",
                "Read last year's roadmap retro before writing the 2027 one. {lastyear_note}",
                project=R,
                topics="roadmap|planning|retro",
                imp=0.4,
                val=0.0,
                uses=1,
            ),
            sp(
                "note",
                "Jonas wants the 2027 roadmap on {roadmap_pages}. {jonas_roadmap}",
                people="jonas",
                project=R,
                topics="roadmap|management",
                imp=0.5,
                val=0.0,
                uses=1,
            ),
        ),
        "draft": (
            sp(
                "task",
                "{draft_ordinal} draft of the 2027 roadmap; cut {cut_item}.",
                project=R,
                topics="roadmap|planning|prioritization",
                imp=0.6,
                val=0.2,
            ),
            sp(
                "task",
                "Budget spreadsheet for 2027: {budget_note}.",
                project=R,
                topics="budget|roadmap|headcount",
                imp=0.55,
                val=-0.05,
            ),
            sp(
                "meeting",
                "Walked Jonas through the roadmap draft. {jonas_feedback}",
                people="jonas",
                project=R,
                topics="roadmap|feedback|management",
                imp=0.6,
                val=0.25,
                uses=2,
            ),
            sp(
                "idea",
                "Roadmap framing idea: {framing_idea}.",
                project=R,
                topics="roadmap|ideas|storytelling",
                imp=0.45,
                val=0.35,
            ),
        ),
        "final": (
            sp(
                "task",
                "Turned the leadership feedback on the roadmap into {n_action} action items.",
                project=R,
                topics="roadmap|planning",
                imp=0.5,
                val=0.35,
                uses=1,
            ),
            sp(
                "note",
                "Since {ref_roadmap}, people keep quoting the three bets back to me. Good sign.",
                project=R,
                topics="roadmap|strategy",
                imp=0.5,
                val=0.6,
                uses=1,
            ),
        ),
    },
}

GENERAL_WORK: tuple[Spec, ...] = (
    sp("task", "Cleared {n_emails} emails. {inbox_note}", topics="email|admin", imp=0.2, val=0.0),
    sp(
        "task",
        "Expense report for {expense_item} finally submitted.",
        topics="admin|expenses",
        imp=0.15,
        val=0.1,
        uses=2,
    ),
    sp(
        "task",
        "Performance review prep for {colleague}: {perf_note}.",
        people="@colleague",
        topics="performance reviews|management",
        imp=0.45,
        val=0.2,
    ),
    sp(
        "task",
        "Calendar Tetris: moved {n_meetings} meetings to free up {free_block}.",
        topics="calendar|time management",
        imp=0.25,
        val=0.1,
    ),
    sp(
        "social",
        "Coffee with {colleague} by the machine: {coffee_chat}.",
        people="@colleague",
        topics="coffee|team",
        imp=0.2,
        val=0.4,
    ),
    sp(
        "note",
        "Office is {office_mood} today; {office_note}.",
        topics="office|focus",
        imp=0.15,
        val=0.05,
    ),
    sp("idea", "Random work idea: {work_idea}.", topics="ideas|team process", imp=0.35, val=0.35),
)

OFFICE_ONLY = tuple(
    spec
    for spec in GENERAL_WORK
    if any(marker in spec.texts[0] for marker in ("by the machine", "Office is"))
)

STANDUP = sp(
    "meeting",
    (
        "Standup: {atlas_status}; {beacon_status}.",
        "Quick standup: {atlas_status}, and {beacon_status}.",
        "Standup notes: {beacon_status}, and {atlas_status}.",
        "Standup ran long. Hiring: {hiring_status}. Atlas: {atlas_status}.",
    ),
    people="priya kofi elin tomas",
    topics=f"standup|{TOP_ATLAS}|{TOP_BEACON}",
    imp=0.3,
    val=0.05,
)

AFTER_STANDUP: tuple[Spec, ...] = (
    sp("note", "Blocker from standup: {blocker}.", topics="standup|blockers", imp=0.35, val=-0.2),
    sp(
        "task", "After standup, first thing: {work_todo}.", topics="todo|planning", imp=0.3, val=0.0
    ),
    sp(
        "note",
        "Hiring update at standup: {hiring_status}.",
        project=H,
        topics="hiring|standup",
        imp=0.3,
        val=0.1,
    ),
)

PLANNING = sp(
    "meeting",
    (
        "Weekly planning with Jonas, Priya and Tomás. Top priority this week: {week_priority}.",
        "Monday planning: we agreed this week is about {week_priority}.",
    ),
    people="jonas priya tomas",
    topics="planning|priorities",
    imp=0.5,
    val=0.15,
)

JONAS_1ON1 = sp(
    "meeting",
    (
        "1:1 with Jonas. We talked about {jonas_topic}.",
        "1:1 with Jonas: {jonas_topic} came up, and he asked me to {jonas_ask}.",
    ),
    people="jonas",
    topics="1:1|career|management",
    imp=0.5,
    val=0.2,
)

JONAS_FOLLOWUP = sp(
    "task",
    "Follow-up from the 1:1 with Jonas: {jonas_ask}.",
    people="jonas",
    topics="1:1|todo",
    imp=0.35,
    val=0.0,
)

ATLAS_SYNC = sp(
    "meeting",
    (
        "Atlas sync with Priya, Kofi and Oskar: {atlas_status}.",
        "Weekly Atlas sync. Headline: {atlas_status}.",
    ),
    people="priya kofi oskar",
    project=A,
    topics=f"{TOP_ATLAS}|sync",
    imp=0.5,
    val=0.1,
)

BEACON_SYNC = sp(
    "meeting",
    (
        "Beacon sync with Tomás and Elin: {beacon_status}.",
        "Weekly Beacon sync. Headline: {beacon_status}.",
    ),
    people="tomas elin",
    project=B,
    topics=f"{TOP_BEACON}|sync",
    imp=0.5,
    val=0.15,
)

PRIYA_1ON1 = sp(
    "meeting",
    "1:1 with Priya. {priya_topic}",
    people="priya",
    topics="1:1|mentoring",
    imp=0.4,
    val=0.35,
)

RETRO = sp(
    "meeting",
    ("Sprint retro: {retro_item}.", "Retro takeaway: {retro_item}."),
    people="priya kofi elin tomas oskar",
    topics="retro|team process",
    imp=0.4,
    val=0.2,
)

DEMO = sp(
    "meeting",
    "Friday demo: {demo_item}.",
    people="priya kofi elin tomas oskar",
    topics="demo|team",
    imp=0.35,
    val=0.45,
)

WRAP_UP = sp(
    "task",
    ("Todo for tomorrow: {work_todo}.", "End-of-day list: {work_todo}, then go home."),
    topics="todo|planning",
    imp=0.3,
    val=0.0,
)

WEEKLY_REVIEW = sp(
    "note",
    "Sunday weekly review: {weekly_review}.",
    topics="weekly review|reflection|planning",
    imp=0.45,
    val=0.2,
    loc="home",
)

# --------------------------------------------------------------------------
# Life pools, grouped by theme.
# --------------------------------------------------------------------------

LIFE_THEMES: dict[str, tuple[Spec, ...]] = {
    "run": (
        sp(
            "hobby",
            (
                "Easy {run_km} km along the river before work. {run_note}",
                "Morning run: {run_km} km at {run_pace} pace. {run_note}",
            ),
            topics="running|training",
            imp=0.3,
            val=0.55,
            loc="riverside trail",
        ),
    ),
    "breakfast": (
        sp(
            "family",
            "Breakfast chaos: {breakfast_note}.",
            people="ella daniel",
            topics="family|mornings",
            imp=0.2,
            val=0.25,
            loc="home",
        ),
        sp(
            "family",
            "Dropped Ella at school; {dropoff_note}.",
            people="ella",
            topics="family|school",
            imp=0.2,
            val=0.4,
            loc="Ella's school",
        ),
    ),
    "commute": (
        sp("note", "On the train: {train_note}.", topics="commute", imp=0.1, val=0.1, loc="train"),
        sp(
            "idea",
            "Train idea: {work_idea}.",
            topics="ideas|commute",
            imp=0.3,
            val=0.3,
            loc="train",
        ),
    ),
    "lunch": (
        sp(
            "social",
            "Lunch at café Linde with {colleague}. We talked about {lunch_topic}.",
            people="@colleague",
            topics="lunch|team",
            imp=0.2,
            val=0.45,
            loc="café Linde",
        ),
        sp(
            "health",
            "Ate at my desk again: {desk_lunch}. Need to stop doing that.",
            topics="lunch|health",
            imp=0.15,
            val=-0.2,
        ),
        sp(
            "health",
            "Lunch walk around {walk_place}; {walk_note}.",
            topics="walking|health",
            imp=0.2,
            val=0.4,
            loc="park",
        ),
    ),
    "dinner": (
        sp(
            "family",
            "Dinner with Daniel and Ella. Ella told us about {ella_school}.",
            people="daniel ella",
            topics="family|dinner|school",
            imp=0.3,
            val=0.6,
            loc="home",
        ),
        sp(
            "family",
            "Helped Ella with her {ella_subject} homework; {homework_note}.",
            people="ella",
            topics="family|school|homework",
            imp=0.3,
            val=0.45,
            loc="home",
        ),
    ),
    "bedtime": (
        sp(
            "family",
            "Bedtime story with Ella: chapter {chapter} of {kids_book}. {bedtime_note}",
            people="ella",
            topics="family|reading|bedtime",
            imp=0.25,
            val=0.7,
            loc="home",
        ),
    ),
    "partner": (
        sp(
            "family",
            "Daniel {daniel_news}.",
            people="daniel",
            topics="family|partner",
            imp=0.3,
            val=0.5,
            loc="home",
        ),
        sp(
            "family",
            "Long talk with Daniel after Ella fell asleep, about {daniel_talk}.",
            people="daniel",
            topics="family|partner",
            imp=0.4,
            val=0.4,
            loc="home",
        ),
    ),
    "cooking": (
        sp(
            "hobby",
            "Cooked {dish} tonight; {cook_note}.",
            topics="cooking|dinner",
            imp=0.2,
            val=0.5,
            loc="home",
        ),
    ),
    "mom": (
        sp(
            "family",
            "Called Mom. {mom_news}",
            people="birgitta",
            topics="family|mom",
            imp=0.35,
            val=0.35,
            loc="home",
        ),
        sp(
            "family",
            "Visited Mom with Ella. {mom_news}",
            people="birgitta ella",
            topics="family|mom",
            imp=0.45,
            val=0.55,
            loc="Mom's apartment",
        ),
    ),
    "errand": (
        sp(
            "errand",
            "Picked up {pharmacy_item} at the pharmacy on the way home.",
            topics="pharmacy|errands",
            imp=0.15,
            val=0.0,
            loc="pharmacy",
        ),
        sp(
            "errand",
            "Groceries after work: {grocery_list}.",
            topics="groceries|errands",
            imp=0.1,
            val=0.05,
            loc="Hagen's market",
        ),
    ),
    "friends": (
        sp(
            "social",
            "Texted back and forth with Leo about {leo_topic}.",
            people="leo",
            topics="friends|running",
            imp=0.2,
            val=0.45,
            loc="home",
        ),
    ),
    "reading": (
        sp(
            "hobby",
            "Read {pages} pages of {club_book} before bed. {book_note}",
            topics="book club|reading",
            imp=0.2,
            val=0.45,
            loc="home",
        ),
        sp(
            "hobby",
            "Ingrid sent the book club reminder for {club_book}. {book_note}",
            people="ingrid",
            topics="book club|reading",
            imp=0.2,
            val=0.3,
            uses=3,
            loc="home",
        ),
    ),
    "gym": (
        sp(
            "hobby",
            "Gym after work: {gym_session}.",
            topics="gym|training|health",
            imp=0.25,
            val=0.5,
            loc="gym",
        ),
    ),
    "wellbeing": (
        sp(
            "health",
            "Slept badly again; {sleep_note}.",
            topics="sleep|health",
            imp=0.35,
            val=-0.35,
            loc="home",
        ),
        sp(
            "note",
            "Feeling {feeling} this week. {feeling_note}",
            topics="reflection|stress",
            imp=0.4,
            val=0.0,
            loc="home",
        ),
    ),
    "steps": (
        sp(
            "health",
            "Only {steps} steps today. {steps_note}",
            topics="health|walking",
            imp=0.2,
            val=-0.15,
            loc="home",
        ),
    ),
    "evening_misc": (
        sp("idea", "Idea: {life_idea}.", topics="ideas|family", imp=0.3, val=0.5, loc="home"),
        sp(
            "task",
            "Todo for tomorrow: {life_todo}.",
            topics="todo|household",
            imp=0.25,
            val=0.0,
            loc="home",
        ),
        sp(
            "note",
            "Checked Slack after dinner, I know. {evening_slack}",
            topics="work-life balance|stress",
            imp=0.25,
            val=-0.2,
            loc="home",
        ),
    ),
    "long_run": (
        sp(
            "hobby",
            "Long run with Leo: {long_km} km. {run_note}",
            people="leo",
            topics="running|training|friends",
            imp=0.4,
            val=0.7,
            loc="riverside trail",
        ),
    ),
    "market": (
        sp(
            "errand",
            "Farmers market: {market_haul}.",
            topics="groceries|market",
            imp=0.15,
            val=0.4,
            loc="farmers market",
        ),
        sp(
            "errand",
            "Weekly grocery run: {grocery_list}.",
            topics="groceries|errands",
            imp=0.1,
            val=0.0,
            loc="Hagen's market",
        ),
    ),
    "outing": (
        sp(
            "family",
            (
                "Took Ella to the science museum. She wants to be a volcanologist now.",
                "Science museum with Ella: {museum_note}.",
            ),
            people="ella",
            topics="family|weekend|museum",
            imp=0.4,
            val=0.75,
            loc="science museum",
        ),
        sp(
            "family",
            (
                "Took Ella to the climbing gym. She climbed higher than I dared.",
                "Climbing gym with Ella: {climbing_note}.",
            ),
            people="ella",
            topics="family|weekend|climbing",
            imp=0.4,
            val=0.75,
            loc="climbing gym",
        ),
        sp(
            "family",
            (
                "Library trip with Ella; we came home with seven books.",
                "Took Ella to the library: {library_note}.",
            ),
            people="ella",
            topics="family|weekend|reading",
            imp=0.3,
            val=0.65,
            loc="library",
        ),
        sp(
            "family",
            (
                "Playground by the lake with Ella and Daniel. Muddy, happy, exhausted.",
                "Ella and Daniel raced each other round the lake playground; {playground_note}.",
            ),
            people="ella daniel",
            topics="family|weekend|outdoors",
            imp=0.35,
            val=0.8,
            loc="playground by the lake",
        ),
    ),
    "weekend_cooking": (
        sp(
            "hobby",
            "Weekend cooking project: {big_dish}; {cook_note}.",
            topics="cooking|weekend",
            imp=0.25,
            val=0.6,
            loc="home",
        ),
    ),
    "weekend_friends": (
        sp(
            "social",
            (
                "Sofia and Leo came over for dinner. {friends_note}",
                "Dinner at ours with Sofia and Leo; {friends_note_lower}.",
            ),
            people="sofia leo daniel",
            topics="friends|dinner",
            imp=0.45,
            val=0.8,
            loc="home",
        ),
    ),
    "chores": (
        sp(
            "errand",
            "Chores: {chore}. {chore_note}",
            topics="household|chores",
            imp=0.1,
            val=0.1,
            loc="home",
        ),
    ),
    "family_time": (
        sp(
            "family",
            "Board games with Ella and Daniel: she beat us at {board_game} and gloated all day.",
            people="ella daniel",
            topics="family|games|weekend",
            imp=0.3,
            val=0.75,
            loc="home",
        ),
        sp(
            "family",
            "Baked {bake} with Ella. {bake_note}",
            people="ella",
            topics="family|baking|weekend",
            imp=0.3,
            val=0.7,
            loc="home",
        ),
        sp(
            "family",
            "Bike ride with Daniel and Ella to {bike_dest}; {bike_note}.",
            people="daniel ella",
            topics="family|cycling|outdoors",
            imp=0.35,
            val=0.75,
            loc="{bike_dest}",
        ),
        sp(
            "family",
            "Daniel and I walked {walk_place} while Ella was at a birthday party. {walk_talk}",
            people="daniel",
            topics="family|partner|walking",
            imp=0.35,
            val=0.6,
            loc="{walk_place}",
        ),
    ),
    "lazy": (
        sp(
            "note",
            "Lazy morning with coffee and {lazy_thing}. Needed it.",
            topics="rest|weekend",
            imp=0.2,
            val=0.6,
            loc="home",
        ),
    ),
    "trip": (
        sp(
            "travel",
            "Walked around {cph_place} with Daniel and Ella. {trip_note}",
            people="daniel ella",
            topics="travel|copenhagen|family",
            imp=0.5,
            val=0.8,
            loc="Copenhagen",
        ),
        sp(
            "travel",
            "Ella's verdict on Copenhagen so far: {ella_verdict}",
            people="ella",
            topics="travel|copenhagen|family",
            imp=0.4,
            val=0.8,
            loc="Copenhagen",
        ),
        sp(
            "travel",
            (
                "Food stop at {cph_food}. {trip_food_note}",
                "We ate at {cph_food}; {trip_food_lower}.",
            ),
            people="daniel ella",
            topics="travel|food",
            imp=0.35,
            val=0.75,
            loc="Copenhagen",
        ),
        sp(
            "note",
            "Checked Slack from the hotel: {trip_slack}.",
            topics="work-life balance|travel",
            imp=0.3,
            val=-0.1,
            loc="hotel in Copenhagen",
        ),
        sp(
            "travel",
            "Canal boat tour with Daniel and Ella. {trip_note}",
            people="daniel ella",
            topics="travel|copenhagen|family",
            imp=0.45,
            val=0.8,
            loc="Copenhagen",
        ),
        sp(
            "travel",
            "Rented a cargo bike and rode around {cph_place}; Ella shouted hello at every dog.",
            people="ella daniel",
            topics="travel|copenhagen|cycling",
            imp=0.45,
            val=0.85,
            loc="Copenhagen",
        ),
    ),
    "trip_morning": (
        sp(
            "travel",
            "Slow hotel breakfast while Ella planned the day on a paper map. {trip_note}",
            people="ella daniel",
            topics="travel|family",
            imp=0.3,
            val=0.7,
            loc="hotel in Copenhagen",
        ),
    ),
    "trip_evening": (
        sp(
            "family",
            "Bought {souvenir} for Mom and a tiny Lego set for Ella.",
            people="birgitta ella",
            topics="travel|shopping|family",
            imp=0.2,
            val=0.5,
            loc="Copenhagen",
        ),
        sp(
            "note",
            "{trip_reflection}",
            topics="travel|reflection",
            imp=0.35,
            val=0.6,
            loc="Copenhagen",
        ),
    ),
}

DRINKS = sp(
    "social",
    (
        "Drinks with Sofia at {bar}. She's {sofia_news}.",
        "Thursday drinks with Sofia at {bar}; she's {sofia_news}.",
    ),
    people="sofia",
    topics="friends|catching up",
    imp=0.4,
    val=0.7,
    loc="{bar}",
)

# Themes whose specs are alternatives rather than steps of one episode.
THEME_MAX_SIZE: dict[str, int] = {
    "lunch": 1,
    "commute": 1,
    "outing": 1,
    "market": 1,
    "chores": 1,
    "errand": 1,
    "partner": 1,
    "wellbeing": 1,
    "evening_misc": 1,
    "reading": 1,
    "mom": 1,
    "family_time": 1,
}

# Themes that happen at most once a day; themes sharing a group exclude each other.
THEME_GROUP: dict[str, str] = {
    "run": "run",
    "long_run": "run",
    "breakfast": "breakfast",
    "lunch": "lunch",
    "commute": "commute",
    "dinner": "dinner",
    "weekend_friends": "dinner",
    "cooking": "cooking",
    "weekend_cooking": "cooking",
    "bedtime": "bedtime",
    "mom": "mom",
    "outing": "outing",
    "market": "groceries",
    "gym": "gym",
    "steps": "steps",
    "lazy": "lazy",
    "reading": "reading",
    "trip_morning": "trip_morning",
}
SPEC_GROUP: dict[Spec, str] = {
    spec: THEME_GROUP[name]
    for name, pool in LIFE_THEMES.items()
    if name in THEME_GROUP
    for spec in pool
}
GROUP_SPECS: dict[str, list[Spec]] = {
    group: [
        spec
        for name, pool in LIFE_THEMES.items()
        if THEME_GROUP.get(name) == group
        for spec in pool
    ]
    for group in THEME_GROUP.values()
}

CODAS: dict[str, tuple[str, ...]] = {
    "meeting": (
        "Notes are in the shared doc.",
        "Action items assigned.",
        "Ran five minutes over, as usual.",
        "Need to send a recap.",
    ),
    "task": (
        "One less thing.",
        "Took longer than it should have.",
        "Will double-check tomorrow.",
        "Ticked off the list.",
    ),
    "errand": ("Done before closing time.", "Quick, for once.", "Annoying but necessary."),
    "note": (
        "Writing it down so I remember.",
        "Not sure what to do with that yet.",
        "Worth remembering.",
        "Noting it for the weekly review.",
    ),
    "social": ("We should do this more often.", "Home later than planned."),
    "health": ("Small steps.", "Note to self: sleep more."),
    "idea": ("Parking it for now.", "Might be nothing.", "Will bring it up this week."),
    "travel": ("Phone full of photos.", "Adding it to the trip album."),
    "hobby": ("Good for the head.", "Same time next week."),
    "family": ("Want to remember this.", "Ella is growing up so fast."),
}
POSITIVE_CODAS = (
    "Needed that.",
    "Good day.",
    "Small joy.",
    "Tired but happy.",
    "Highlight of the day.",
)
NEGATIVE_CODAS = ("Deep breath.", "Tomorrow will be better.", "Not my favourite day.")

# --------------------------------------------------------------------------
# Milestones: fixed events on fixed days that move the story forward.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Milestone:
    key: str
    project: str | None  # a PROJECT_NAMES key, or None for life events
    base_day: int  # day index in a six-week timeline starting on a Monday
    allowed: tuple[int, ...]  # weekdays the event may fall on
    episodes: tuple[tuple[int, str, tuple[Spec, ...]], ...]  # (day offset, "HH:MM", specs)
    event: str  # how later memories refer to it
    phase: str | None = None  # project phase that starts after this day
    book: str | None = None  # book club title


def ms(
    key: str,
    project: str | None,
    base_day: int,
    allowed: tuple[int, ...],
    event: str,
    *episodes: tuple[int, str, tuple[Spec, ...]],
    phase: str | None = None,
    book: str | None = None,
) -> Milestone:
    return Milestone(key, project, base_day, allowed, tuple(episodes), event, phase, book)


MILESTONES: tuple[Milestone, ...] = (
    # Atlas
    ms(
        "atlas_kickoff",
        A,
        0,
        WEEKDAYS,
        "the Atlas kickoff",
        (
            0,
            "13:30",
            (
                sp(
                    "meeting",
                    "Atlas kickoff with Priya, Kofi and Oskar. Goal: move the billing ledger off "
                    "the old Postgres cluster before year end.",
                    people="priya kofi oskar",
                    project=A,
                    topics=f"{TOP_ATLAS}|kickoff|billing",
                    imp=0.75,
                    val=0.35,
                ),
                sp(
                    "task",
                    "Took the action item to write the Atlas scope doc by Friday. Slight dread "
                    "about what we'll find.",
                    project=A,
                    topics=f"{TOP_ATLAS}|documentation",
                    imp=0.5,
                    val=-0.05,
                ),
            ),
        ),
        phase="design",
    ),
    ms(
        "atlas_dualwrite",
        A,
        9,
        WEEKDAYS,
        "switching on dual-write",
        (
            0,
            "15:10",
            (
                sp(
                    "note",
                    "Dual-write to the new billing cluster is on for the first three tables. No "
                    "alarms so far.",
                    people="priya oskar",
                    project=A,
                    topics=f"{TOP_ATLAS}|replication|milestone",
                    imp=0.65,
                    val=0.45,
                ),
            ),
        ),
        phase="build",
    ),
    ms(
        "atlas_dry1",
        A,
        17,
        WEEKDAYS,
        "the failed dry run",
        (
            0,
            "17:05",
            (
                sp(
                    "task",
                    "First Atlas dry run started. Priya has snacks and a checklist; I have nerves.",
                    people="priya",
                    project=A,
                    topics=f"{TOP_ATLAS}|dry run",
                    imp=0.6,
                    val=-0.1,
                ),
            ),
        ),
        (
            0,
            "18:10",
            (
                sp(
                    "note",
                    "Dry run failed: invoice totals differ between the old and new database for "
                    "about 3% of rows.",
                    people="priya kofi",
                    project=A,
                    topics=f"{TOP_ATLAS}|dry run|incident",
                    imp=0.85,
                    val=-0.7,
                ),
                sp(
                    "note",
                    "Calling it: we roll back. Priya is calm; I am much less calm.",
                    people="priya",
                    project=A,
                    topics=f"{TOP_ATLAS}|rollback|stress",
                    imp=0.75,
                    val=-0.6,
                ),
            ),
        ),
        phase="problems",
    ),
    ms(
        "atlas_rootcause",
        A,
        23,
        WEEKDAYS,
        "Kofi's timezone discovery",
        (
            0,
            "11:15",
            (
                sp(
                    "note",
                    "Kofi found it: the old ledger stores timestamps in local time with no zone, "
                    "so invoices near midnight land on the wrong day.",
                    people="kofi",
                    project=A,
                    topics=f"{TOP_ATLAS}|root cause|timezones",
                    imp=0.8,
                    val=0.6,
                ),
                sp(
                    "social",
                    "Relief is an understatement. Bought Kofi the biggest cinnamon bun café Linde "
                    "sells.",
                    people="kofi",
                    project=A,
                    topics="celebration|team",
                    imp=0.4,
                    val=0.85,
                    loc="café Linde",
                ),
            ),
        ),
        phase="fixing",
    ),
    ms(
        "atlas_dry2",
        A,
        30,
        WEEKDAYS,
        "the clean second dry run",
        (
            0,
            "17:40",
            (
                sp(
                    "note",
                    "Second Atlas dry run: every invoice total matches, and the whole rehearsal "
                    "took 47 minutes.",
                    people="priya kofi oskar",
                    project=A,
                    topics=f"{TOP_ATLAS}|dry run|milestone",
                    imp=0.8,
                    val=0.75,
                ),
                sp(
                    "social",
                    "Priya and I high-fived like idiots in an almost empty office.",
                    people="priya",
                    project=A,
                    topics="celebration|team",
                    imp=0.35,
                    val=0.9,
                ),
            ),
        ),
        phase="rehearsal",
    ),
    ms(
        "atlas_cutover",
        A,
        36,
        WEEKDAYS,
        "the cutover",
        (
            0,
            "21:00",
            (
                sp(
                    "task",
                    "Atlas cutover started at 21:00. Billing is read-only and Oskar is narrating "
                    "every step.",
                    people="oskar priya",
                    project=A,
                    topics=f"cutover|{TOP_ATLAS}",
                    imp=0.85,
                    val=0.1,
                ),
            ),
        ),
        (
            0,
            "21:56",
            (
                sp(
                    "note",
                    "Scare at 21:50: the invoice queue stalled for six minutes. It was a stale "
                    "connection pool, not the data.",
                    people="oskar",
                    project=A,
                    topics="cutover|incident|stress",
                    imp=0.75,
                    val=-0.5,
                ),
            ),
        ),
        (
            0,
            "22:42",
            (
                sp(
                    "note",
                    "Atlas cutover done at 22:40. Billing runs on the new cluster and the totals "
                    "match.",
                    people="priya kofi oskar",
                    project=A,
                    topics=f"cutover|{TOP_ATLAS}|milestone",
                    imp=0.95,
                    val=0.85,
                ),
            ),
        ),
        phase="done",
    ),
    # Beacon
    ms(
        "beacon_kickoff",
        B,
        1,
        WEEKDAYS,
        "the Beacon kickoff",
        (
            0,
            "14:00",
            (
                sp(
                    "meeting",
                    "Beacon kickoff with Tomás and Elin: smart notifications in the app, launch "
                    "target {when_beacon_launch}.",
                    people="tomas elin",
                    project=B,
                    topics=f"{TOP_BEACON}|kickoff|notifications",
                    imp=0.75,
                    val=0.45,
                ),
                sp(
                    "note",
                    "Tomás already has sketches. Elin's first question was about battery drain, "
                    "which is exactly the right question.",
                    people="tomas elin",
                    project=B,
                    topics=f"{TOP_BEACON}|design",
                    imp=0.45,
                    val=0.5,
                ),
            ),
        ),
        phase="design",
    ),
    ms(
        "beacon_beta",
        B,
        10,
        WEEKDAYS,
        "the beta release",
        (
            0,
            "11:40",
            (
                sp(
                    "note",
                    "Beacon beta is out to 200 internal users. First feedback arrived within ten "
                    "minutes: 'finally'.",
                    people="elin tomas",
                    project=B,
                    topics=f"beta|{TOP_BEACON}|milestone",
                    imp=0.75,
                    val=0.7,
                ),
            ),
        ),
        phase="beta",
    ),
    ms(
        "beacon_crash",
        B,
        21,
        WEEKDAYS,
        "the Android crash showing up",
        (
            0,
            "10:05",
            (
                sp(
                    "note",
                    "Big one: Beacon crashes on some Android phones when a notification arrives "
                    "in the background. Elin reproduced it in ten minutes.",
                    people="elin",
                    project=B,
                    topics=f"crash bug|android|{TOP_BEACON}",
                    imp=0.85,
                    val=-0.7,
                ),
                sp(
                    "meeting",
                    "Launch is {when_beacon_launch}. Told Jonas we might need to slip.",
                    people="jonas",
                    project=B,
                    topics=f"deadline|{TOP_BEACON}|stress",
                    imp=0.75,
                    val=-0.55,
                ),
            ),
        ),
        phase="crisis",
    ),
    ms(
        "beacon_fix",
        B,
        24,
        WEEKDAYS,
        "Elin's crash fix",
        (
            0,
            "15:20",
            (
                sp(
                    "note",
                    "Elin's fix for the Android crash is merged, and the beta crash-free rate is "
                    "back above 99.5%. The launch date holds.",
                    people="elin",
                    project=B,
                    topics=f"crash bug|{TOP_BEACON}|relief",
                    imp=0.8,
                    val=0.8,
                ),
            ),
        ),
        phase="prep",
    ),
    ms(
        "beacon_gonogo",
        B,
        29,
        WEEKDAYS,
        "the go/no-go",
        (
            0,
            "11:00",
            (
                sp(
                    "meeting",
                    "Beacon go/no-go: go. Everyone said yes before I finished the question.",
                    people="jonas tomas elin",
                    project=B,
                    topics=f"go/no-go|{TOP_BEACON}",
                    imp=0.8,
                    val=0.7,
                ),
            ),
        ),
        phase="prep",
    ),
    ms(
        "beacon_launch",
        B,
        31,
        WEEKDAYS,
        "the Beacon launch",
        (
            0,
            "07:05",
            (
                sp(
                    "note",
                    "Launch day for Beacon. Couldn't eat breakfast.",
                    project=B,
                    topics=f"{TOP_BEACON}|stress",
                    imp=0.6,
                    val=-0.2,
                    loc="home",
                ),
            ),
        ),
        (
            0,
            "10:00",
            (
                sp(
                    "note",
                    "Beacon is live for everyone. Watching the dashboards with Tomás and Elin, "
                    "and nobody is talking.",
                    people="tomas elin",
                    project=B,
                    topics=f"{TOP_BEACON}|milestone",
                    imp=0.95,
                    val=0.6,
                ),
                sp(
                    "note",
                    "First hour of Beacon: 99.8% crash-free and an opt-in rate way above our "
                    "guess. I might cry.",
                    project=B,
                    topics=f"{TOP_BEACON}|metrics|joy",
                    imp=0.9,
                    val=0.95,
                ),
                sp(
                    "social",
                    "Jonas brought cake for the whole floor to celebrate Beacon.",
                    people="jonas tomas elin",
                    project=B,
                    topics=f"celebration|{TOP_BEACON}",
                    imp=0.5,
                    val=0.9,
                ),
            ),
        ),
        (
            0,
            "19:30",
            (
                sp(
                    "family",
                    "Celebrated the Beacon launch with Daniel and Ella: pizza and a ridiculous "
                    "cake Ella decorated.",
                    people="daniel ella",
                    project=B,
                    topics="family|celebration",
                    imp=0.7,
                    val=0.95,
                    loc="home",
                ),
            ),
        ),
        phase="live",
    ),
    ms(
        "beacon_retro",
        B,
        38,
        WEEKDAYS,
        "the launch retro",
        (
            0,
            "14:00",
            (
                sp(
                    "meeting",
                    "Beacon launch retro: {metric_week}. We agreed the crash scare taught us to "
                    "test background states first.",
                    people="tomas elin jonas",
                    project=B,
                    topics=f"retro|{TOP_BEACON}|lessons learned",
                    imp=0.7,
                    val=0.7,
                ),
            ),
        ),
        phase="live",
    ),
    # Hiring
    ms(
        "hiring_posted",
        H,
        3,
        WEEKDAYS,
        "the job post going live",
        (
            0,
            "09:50",
            (
                sp(
                    "task",
                    "The backend engineer job post is live. Hana expects the first CVs by "
                    "{next_weekday}.",
                    people="hana",
                    project=H,
                    topics="hiring|job post",
                    imp=0.55,
                    val=0.3,
                ),
            ),
        ),
        phase="sourcing",
    ),
    ms(
        "hiring_screens",
        H,
        14,
        WEEKDAYS,
        "the first phone screens",
        (
            0,
            "13:30",
            (
                sp(
                    "meeting",
                    "First phone screens for the backend role today. {candidate} was a strong "
                    "start.",
                    people="@candidate hana",
                    project=H,
                    topics="hiring|interviews",
                    imp=0.55,
                    val=0.4,
                ),
            ),
        ),
        phase="interviewing",
    ),
    ms(
        "hiring_onsite",
        H,
        22,
        WEEKDAYS,
        "Nadia's onsite",
        (
            0,
            "10:00",
            (
                sp(
                    "meeting",
                    "Nadia Okafor's onsite today. Her system design session was the best I've "
                    "seen this year.",
                    people="nadia hana",
                    project=H,
                    topics="interviews|hiring",
                    imp=0.7,
                    val=0.7,
                ),
            ),
        ),
        phase="shortlist",
    ),
    ms(
        "hiring_offer",
        H,
        28,
        WEEKDAYS,
        "sending the offer",
        (
            0,
            "15:00",
            (
                sp(
                    "task",
                    "Sent Nadia the offer. Hana thinks she has a competing one from a bigger "
                    "company.",
                    people="nadia hana",
                    project=H,
                    topics="hiring|offer",
                    imp=0.75,
                    val=0.2,
                ),
            ),
        ),
        phase="offer",
    ),
    ms(
        "hiring_accept",
        H,
        32,
        WEEKDAYS,
        "Nadia saying yes",
        (
            0,
            "14:10",
            (
                sp(
                    "note",
                    "Nadia accepted! She starts {nadia_start}. Hana sent a row of exclamation "
                    "marks.",
                    people="nadia hana",
                    project=H,
                    topics="hiring|offer|joy",
                    imp=0.85,
                    val=0.9,
                ),
            ),
        ),
        phase="onboarding",
    ),
    # Roadmap
    ms(
        "roadmap_owner",
        R,
        2,
        WEEKDAYS,
        "Jonas's roadmap ask",
        (
            0,
            "11:30",
            (
                sp(
                    "meeting",
                    "Jonas asked me to own the 2027 product roadmap. Flattered and slightly "
                    "terrified.",
                    people="jonas",
                    project=R,
                    topics="roadmap|career",
                    imp=0.7,
                    val=0.3,
                ),
            ),
        ),
        phase="input",
    ),
    ms(
        "roadmap_draft",
        R,
        29,
        WEEKDAYS,
        "the first full draft",
        (
            0,
            "16:30",
            (
                sp(
                    "task",
                    "First full draft of the 2027 roadmap is done: three bets and a cleanup year "
                    "for billing.",
                    project=R,
                    topics="roadmap|strategy|milestone",
                    imp=0.65,
                    val=0.45,
                ),
            ),
        ),
        phase="draft",
    ),
    ms(
        "roadmap_review",
        R,
        39,
        WEEKDAYS,
        "the leadership review",
        (
            0,
            "13:00",
            (
                sp(
                    "meeting",
                    "Presented the 2027 roadmap to leadership. Jonas said it was the clearest one "
                    "they've seen.",
                    people="jonas",
                    project=R,
                    topics="roadmap|leadership|milestone",
                    imp=0.85,
                    val=0.8,
                ),
            ),
        ),
        phase="final",
    ),
    # Life
    ms(
        "life_dentist",
        None,
        8,
        WEEKDAYS,
        "the dentist",
        (
            0,
            "16:30",
            (
                sp(
                    "health",
                    "Dentist with Dr. Amani: one small cavity, filling booked "
                    "{when_life_filling}. Flossing resolution number forty.",
                    people="amani",
                    topics="dentist|health",
                    imp=0.45,
                    val=-0.3,
                    loc="dental clinic",
                ),
            ),
        ),
    ),
    ms(
        "life_bookclub1",
        None,
        9,
        (WED,),
        "the first book club",
        (
            0,
            "19:30",
            (
                sp(
                    "hobby",
                    "Book club at Ingrid's: we discussed {club_book}. {club_note}",
                    people="ingrid sofia",
                    topics="book club|reading|friends",
                    imp=0.5,
                    val=0.7,
                    loc="Ingrid's flat",
                ),
                sp(
                    "social",
                    "Walked home from book club with Sofia; she's {sofia_news}.",
                    people="sofia",
                    topics="friends|book club",
                    imp=0.3,
                    val=0.6,
                    loc="street",
                ),
            ),
        ),
        book="The Remains of the Day",
    ),
    ms(
        "life_mom70",
        None,
        12,
        (SAT,),
        "Mom's birthday",
        (
            0,
            "12:30",
            (
                sp(
                    "family",
                    "Mom's 70th birthday lunch. She cried during Ella's speech, and so did I.",
                    people="birgitta ella daniel",
                    topics="family|birthday|mom",
                    imp=0.85,
                    val=0.9,
                    loc="restaurant",
                ),
                sp(
                    "family",
                    "Mom kept saying she didn't want a fuss, then stayed until the restaurant "
                    "closed.",
                    people="birgitta",
                    topics="family|birthday",
                    imp=0.5,
                    val=0.8,
                    loc="restaurant",
                ),
            ),
        ),
    ),
    ms(
        "life_fever",
        None,
        16,
        WEEKDAYS,
        "Ella's fever night",
        (
            0,
            "02:40",
            (
                sp(
                    "health",
                    "Ella woke up at 2:30 with a 39.4 fever. Daniel and I took turns sitting with "
                    "her.",
                    people="ella daniel",
                    topics="health|family|sleep",
                    imp=0.75,
                    val=-0.6,
                    loc="home",
                ),
            ),
        ),
        (
            0,
            "07:35",
            (
                sp(
                    "family",
                    "Working from home today so I can stay with Ella; Daniel takes the afternoon "
                    "shift.",
                    people="ella daniel",
                    topics="family|health|remote work",
                    imp=0.5,
                    val=-0.2,
                    loc="home",
                ),
            ),
        ),
    ),
    ms(
        "life_filling",
        None,
        18,
        WEEKDAYS,
        "the filling",
        (
            0,
            "08:05",
            (
                sp(
                    "health",
                    "Filling done at Dr. Amani's. Half my face is numb and standup is in an hour.",
                    people="amani",
                    topics="dentist|health",
                    imp=0.35,
                    val=-0.25,
                    loc="dental clinic",
                ),
            ),
        ),
    ),
    ms(
        "life_sofia_bday",
        None,
        19,
        (SAT,),
        "Sofia's birthday",
        (
            0,
            "20:00",
            (
                sp(
                    "social",
                    "Sofia's birthday at Bar Nova. We danced, which I haven't done in a year.",
                    people="sofia leo daniel",
                    topics="friends|birthday",
                    imp=0.55,
                    val=0.85,
                    loc="Bar Nova",
                ),
            ),
        ),
    ),
    ms(
        "life_bookclub2",
        None,
        23,
        (WED,),
        "the second book club",
        (
            0,
            "19:30",
            (
                sp(
                    "hobby",
                    "Book club at Ingrid's: {club_book}. {club_note}",
                    people="ingrid sofia",
                    topics="book club|reading|friends",
                    imp=0.5,
                    val=0.7,
                    loc="Ingrid's flat",
                ),
            ),
        ),
        book="Piranesi",
    ),
    ms(
        "life_car",
        None,
        24,
        WEEKDAYS,
        "the car service",
        (
            0,
            "07:50",
            (
                sp(
                    "errand",
                    "Dropped the car at Berglund's workshop for winter tyres and the annual "
                    "service.",
                    topics="car service|errands",
                    imp=0.2,
                    val=0.0,
                    loc="car workshop",
                ),
            ),
        ),
        (
            0,
            "17:35",
            (
                sp(
                    "errand",
                    "Picked up the car: 6,400 kronor, because the brake pads needed replacing.",
                    topics="car service|money",
                    imp=0.25,
                    val=-0.3,
                    loc="car workshop",
                ),
            ),
        ),
    ),
    ms(
        "life_trip",
        None,
        25,
        (FRI,),
        "the Copenhagen weekend",
        (
            0,
            "17:20",
            (
                sp(
                    "travel",
                    "On the train to Copenhagen with Daniel and Ella. The laptop stays closed "
                    "until Sunday; that's the deal.",
                    people="daniel ella",
                    topics="travel|copenhagen|family",
                    imp=0.6,
                    val=0.75,
                    loc="train",
                ),
            ),
        ),
        (
            2,
            "17:10",
            (
                sp(
                    "travel",
                    "Back home from Copenhagen. Ella fell asleep on the train holding her bag of "
                    "souvenirs.",
                    people="daniel ella",
                    topics="travel|family",
                    imp=0.5,
                    val=0.7,
                    loc="train",
                ),
            ),
        ),
    ),
    ms(
        "life_gp",
        None,
        28,
        WEEKDAYS,
        "the GP visit",
        (
            0,
            "08:10",
            (
                sp(
                    "health",
                    "Saw Dr. Lund about the dizzy spells and the tiredness. She ordered blood "
                    "tests; trying very hard not to google.",
                    people="lund",
                    topics="health|doctor|blood test",
                    imp=0.8,
                    val=-0.55,
                    loc="health centre",
                ),
            ),
        ),
    ),
    ms(
        "life_gp_results",
        None,
        32,
        WEEKDAYS,
        "the blood test results",
        (
            0,
            "09:40",
            (
                sp(
                    "health",
                    "Dr. Lund called: iron is low, everything else looks normal, huge relief. "
                    "Supplements and a follow-up in three months.",
                    people="lund",
                    topics="health|blood test|relief",
                    imp=0.75,
                    val=0.7,
                ),
            ),
        ),
    ),
    ms(
        "life_teacher",
        None,
        35,
        WEEKDAYS,
        "the parent-teacher meeting",
        (
            0,
            "16:45",
            (
                sp(
                    "family",
                    "Parent-teacher meeting: Ella reads well above her level but talks through "
                    "maths. Sounds familiar.",
                    people="ella daniel",
                    topics="family|school",
                    imp=0.55,
                    val=0.5,
                    loc="Ella's school",
                ),
            ),
        ),
    ),
    ms(
        "life_bookclub3",
        None,
        37,
        (WED,),
        "the third book club",
        (
            0,
            "19:30",
            (
                sp(
                    "hobby",
                    "Book club at Ingrid's: {club_book}. {club_note}",
                    people="ingrid sofia",
                    topics="book club|reading|friends",
                    imp=0.5,
                    val=0.7,
                    loc="Ingrid's flat",
                ),
            ),
        ),
        book="Klara and the Sun",
    ),
    ms(
        "life_race",
        None,
        40,
        (SAT,),
        "the Autumn 10k",
        (
            0,
            "10:40",
            (
                sp(
                    "hobby",
                    "Ran the Autumn 10k in {race_time}! Leo beat me by a minute and will never "
                    "let me forget it.",
                    people="leo",
                    topics="running|race|joy",
                    imp=0.7,
                    val=0.9,
                    loc="city park",
                ),
                sp(
                    "family",
                    "Ella and Daniel held up a sign at the finish that said 'GO MAMA'. Best part "
                    "of the race.",
                    people="ella daniel",
                    topics="family|running",
                    imp=0.5,
                    val=0.95,
                    loc="city park",
                ),
            ),
        ),
    ),
)


MILESTONE_SPECS = frozenset(
    spec for m in MILESTONES for _, _, specs in m.episodes for spec in specs
)

# --------------------------------------------------------------------------
# Timeline and context
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    start: date
    total_days: int
    milestone_days: dict[str, int]

    def date_of(self, day: int) -> date:
        return self.start + timedelta(days=day)


def align_day(day: int, allowed: tuple[int, ...], start: date, total: int) -> int:
    """Move ``day`` to the nearest day whose weekday is allowed (forward first)."""
    day = min(max(day, 0), total - 1)
    for delta in range(7):
        for cand in (day + delta, day - delta):
            if 0 <= cand < total and (start + timedelta(days=cand)).weekday() in allowed:
                return cand
    return day


def build_timeline(start: date, weeks: int) -> Timeline:
    total = weeks * 7
    days: dict[str, int] = {}
    last_in_project: dict[str, int] = {}
    for m in MILESTONES:
        scaled = round(m.base_day * total / BASE_DAYS)
        day = align_day(scaled, m.allowed, start, total)
        if m.project is not None:
            day = max(day, last_in_project.get(m.project, 0))
            last_in_project[m.project] = day
        days[m.key] = day
    return Timeline(start=start, total_days=total, milestone_days=days)


def relative_day(target: date, today: date) -> str:
    diff = (target - today).days
    weekday = WEEKDAY_NAMES[target.weekday()]
    if diff == 0:
        return "today"
    if diff == 1:
        return "tomorrow"
    if diff == -1:
        return "yesterday"
    if 2 <= abs(diff) <= 6:
        return f"on {weekday}"
    if 7 <= diff <= 13:
        return f"next {weekday}"
    if -13 <= diff <= -7:
        return f"last {weekday}"
    return f"on {MONTH_ABBR[target.month - 1]} {target.day}"


def project_phase(project: str, day: int, tl: Timeline) -> str:
    phase = "pre"
    for m in MILESTONES:
        if m.project == project and m.phase is not None and tl.milestone_days[m.key] < day:
            phase = m.phase
    return phase


@dataclass(frozen=True)
class DayInfo:
    index: int
    date: date
    weekday: int
    wfh: bool
    trip: bool
    trip_depart: bool
    trip_return: bool
    drinks: bool  # Thursday drinks with Sofia
    out_tonight: bool  # away from home in the evening (drinks, book club, cutover...)
    phases: dict[str, str]  # project phases at the start of the day
    switches: dict[str, tuple[int, str, str]]  # project -> (minute, phase, event) today
    fixed: dict[str, str]
    slots: dict[str, tuple[str, ...]]

    @property
    def weekend(self) -> bool:
        return self.weekday >= SAT

    @property
    def work_location(self) -> str:
        return "home office" if self.wfh else "office"


def day_info(day: int, tl: Timeline) -> DayInfo:
    today = tl.date_of(day)
    weekday = today.weekday()
    phases = {p: project_phase(p, day, tl) for p in PROJECT_NAMES}

    fixed: dict[str, str] = {}
    for m in MILESTONES:
        fixed[f"when_{m.key}"] = relative_day(tl.date_of(tl.milestone_days[m.key]), today)
    for project in PROJECT_NAMES:
        ref = "the kickoff"
        for m in MILESTONES:
            mday = tl.milestone_days[m.key]
            if m.project == project and mday < day:
                ref = f"{m.event} {relative_day(tl.date_of(mday), today)}"
        fixed[f"ref_{project}"] = ref
    launch = tl.milestone_days["beacon_launch"]
    fixed["launch_day_n"] = str(max(1, day - launch + 1))
    next_work = 3 if weekday == FRI else (2 if weekday == SAT else 1)
    next_date = today + timedelta(days=next_work)
    fixed["next_weekday"] = "tomorrow" if next_work == 1 else WEEKDAY_NAMES[next_date.weekday()]
    books = [m for m in MILESTONES if m.book is not None]
    upcoming = [m for m in books if tl.milestone_days[m.key] >= day]
    current = upcoming[0] if upcoming else books[-1]
    fixed["club_book"] = current.book or ""

    slots = dict(SLOTS)
    if tl.milestone_days["life_race"] <= day:  # no countdown once the race is run
        slots["run_note"] = tuple(n for n in SLOTS["run_note"] if "when_life_race" not in n)
    slots.update(phase_slots(phases))

    trip_day = tl.milestone_days["life_trip"]
    trip = trip_day < day <= trip_day + 2
    fever = tl.milestone_days["life_fever"] == day
    switches: dict[str, tuple[int, str, str]] = {}
    for m in MILESTONES:
        if m.project is not None and m.phase is not None and tl.milestone_days[m.key] == day:
            at = min(hm(ep[1]) for ep in m.episodes if ep[0] == 0)
            switches[m.project] = (at, m.phase, m.event)
    evening_events = [
        episode
        for m in MILESTONES
        for episode in m.episodes
        if tl.milestone_days[m.key] + episode[0] == day and hm(episode[1]) >= hm("18:30")
    ]
    away = any("home" not in ep[2][0].locations for ep in evening_events)
    drinks = weekday == THU and (day // 7) % 2 == 0 and not evening_events and day != trip_day
    return DayInfo(
        index=day,
        date=today,
        weekday=weekday,
        wfh=weekday == FRI or fever,
        trip=trip,
        trip_depart=day == trip_day,
        trip_return=day == trip_day + 2,
        drinks=drinks,
        out_tonight=drinks or away,
        phases=phases,
        switches=switches,
        fixed=fixed,
        slots=slots,
    )


# --------------------------------------------------------------------------
# Planning a day: episodes placed on a minute grid without overlaps.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    second: int  # seconds after local midnight
    spec: Spec


class DayPlan:
    """Collects episodes for one day and keeps them from overlapping."""

    def __init__(self, rng: random.Random, quota: int, usage: dict[Spec, int]) -> None:
        self.rng = rng
        self.usage = usage  # lifetime uses per spec, shared across days
        self.remaining = quota
        self.busy: list[tuple[int, int]] = []
        self.items: list[Planned] = []
        self.used: set[Spec] = set()  # membership only; never iterated
        self.blocked: set[Spec] = set()  # membership only; never iterated
        self.allow_repeats = False

    def _free(self, start: int, end: int) -> bool:
        return all(end + 2 <= b0 or start >= b1 + 2 for b0, b1 in self.busy)

    def _offsets(self, count: int) -> list[int]:
        offsets = [self.rng.randint(0, 150)]
        for _ in range(count - 1):
            offsets.append(offsets[-1] + self.rng.randint(75, 660))
        return offsets

    def place(
        self,
        start_min: int,
        specs: Sequence[Spec],
        *,
        shift: bool,
        force: bool = False,
        hold: int = 0,
    ) -> bool:
        """Place an episode near ``start_min``; truncate to the quota.

        ``hold`` keeps the calendar busy for that many minutes (a meeting or an
        evening out lasts longer than the memories written during it).
        """
        specs = list(specs)[: self.remaining]
        if not specs:
            return False
        offsets = self._offsets(len(specs))
        length = max(offsets[-1] // 60 + 3, hold)
        start = start_min
        for _ in range(12 if shift else 1):
            if force or self._free(start, start + length):
                break
            start += 15
        else:
            return False
        start = min(start, 24 * 60 - length - 1)
        self.busy.append((start, start + length))
        for offset, spec in zip(offsets, specs, strict=True):
            self.items.append(Planned(start * 60 + offset, spec))
            self.used.add(spec)
            self.usage[spec] = self.usage.get(spec, 0) + 1
            group = SPEC_GROUP.get(spec)
            if group is not None:
                self.blocked.update(GROUP_SPECS[group])
        self.remaining -= len(specs)
        return True

    def is_free(self, minute: int) -> bool:
        return self._free(minute, minute + 5)


def phase_slots(phases: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Status and priority slots for the given project phases."""
    slots: dict[str, tuple[str, ...]] = {}
    priorities: list[str] = []
    for project, phase in phases.items():
        lines = PHASE_SLOTS[project][phase]
        slots[f"{project}_status"] = lines["status"]
        slots[f"{project}_priority"] = lines["priority"]
        if phase not in ("final", "done"):
            priorities.extend(lines["priority"])
    slots["week_priority"] = tuple(priorities) or ("clearing the backlog",)
    return slots


def phases_at(info: DayInfo, minute: int) -> dict[str, str]:
    """Project phases at a time of day: a milestone switches its project's phase."""
    phases = dict(info.phases)
    for project, (at, phase, _) in info.switches.items():
        if minute > at:
            phases[project] = phase
    return phases


def hm(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def pick(
    rng: random.Random, pool: Sequence[Spec], count: int, plan: DayPlan | None = None
) -> list[Spec]:
    """Sample up to ``count`` specs, kept in pool order.

    Specs already used today are skipped (the episode shrinks, or comes back
    empty, rather than repeating) unless the plan allows repeats; specs blocked
    for the day are never used.
    """
    if plan is None:
        return sorted(rng.sample(list(pool), min(count, len(pool))), key=list(pool).index)
    allowed = [
        s
        for s in pool
        if s not in plan.blocked and not (s.max_uses and plan.usage.get(s, 0) >= s.max_uses)
    ]
    fresh = [s for s in allowed if s not in plan.used]
    candidates = fresh or (allowed if plan.allow_repeats else [])
    chosen = rng.sample(candidates, min(count, len(candidates)))
    return sorted(chosen, key=list(pool).index)


def weighted(rng: random.Random, options: Sequence[tuple[str, float]]) -> str:
    names = [name for name, _ in options]
    weights = [w for _, w in options]
    return rng.choices(names, weights=weights, k=1)[0]


OFFICE_ONLY_LUNCH = tuple(s for s in LIFE_THEMES["lunch"] if "café Linde" in s.texts[0])
SOLO_PEOPLE = ("birgitta", "sofia", "ingrid", "leo")
PROJECT_WEIGHTS = {"atlas": 3.0, "beacon": 3.0, "hiring": 1.5, "roadmap": 1.8}


def work_episode(rng: random.Random, phases: Mapping[str, str], plan: DayPlan) -> list[Spec]:
    options: list[tuple[str, float]] = [("general", 1.6)]
    for project, weight in PROJECT_WEIGHTS.items():
        if phases[project] in PROJECT_POOLS[project]:
            options.append((project, weight))
    choice = weighted(rng, options)
    size = rng.choice((2, 2, 3, 3, 3, 4))
    if choice == "general":
        return pick(rng, GENERAL_WORK, min(size, 2), plan)
    return pick(rng, PROJECT_POOLS[choice][phases[choice]], size, plan)


def theme_episode(
    rng: random.Random,
    themes: Sequence[tuple[str, float]],
    max_size: int,
    plan: DayPlan,
) -> list[Spec]:
    theme = weighted(rng, themes)
    size = rng.randint(1, min(max_size, THEME_MAX_SIZE.get(theme, max_size)))
    return pick(rng, LIFE_THEMES[theme], size, plan)


EVENING_EARLY = (
    ("dinner", 3.0),
    ("cooking", 1.5),
    ("mom", 0.8),
    ("errand", 1.2),
    ("gym", 0.7),
)
EVENING_LATE = (
    ("bedtime", 1.5),
    ("partner", 1.2),
    ("friends", 0.8),
    ("reading", 1.0),
    ("wellbeing", 1.2),
    ("steps", 0.5),
    ("evening_misc", 1.2),
)
AT_HOME_THEMES = ("bedtime", "partner", "dinner", "weekend_friends")
WEEKEND_MORNING = (
    ("long_run", 1.0),
    ("market", 1.2),
    ("chores", 1.2),
    ("lazy", 0.8),
    ("outing", 0.8),
    ("family_time", 0.5),
)
WEEKEND_MIDDAY = (
    ("outing", 2.0),
    ("family_time", 1.5),
    ("weekend_cooking", 0.8),
    ("chores", 0.7),
    ("market", 0.5),
    ("mom", 0.5),
)
WEEKEND_DINNER = (
    ("weekend_cooking", 1.0),
    ("weekend_friends", 0.6),
    ("dinner", 0.8),
)
WEEKEND_LATE = (
    ("reading", 1.0),
    ("partner", 1.0),
    ("bedtime", 1.0),
    ("evening_misc", 0.8),
    ("wellbeing", 0.5),
)


@dataclass(frozen=True)
class Category:
    name: str
    weight: float
    windows: tuple[tuple[int, int], ...]
    max_per_day: int


def categories_for(info: DayInfo) -> list[Category]:
    if info.trip:
        day_end = hm("15:45") if info.trip_return else hm("18:45")
        trip = [
            Category("trip_morning", 0.5, ((hm("08:00"), hm("09:45")),), 1),
            Category("trip", 2.0, ((hm("10:15"), day_end),), 99),
        ]
        if not info.trip_return:
            trip.append(Category("trip_evening", 0.8, ((hm("19:15"), hm("21:30")),), 2))
        return trip
    if info.weekend:
        weekend = [
            Category("weekend_morning", 1.0, ((hm("07:30"), hm("11:15")),), 99),
            Category("weekend_midday", 1.0, ((hm("11:30"), hm("17:30")),), 99),
            Category("weekend_dinner", 0.6, ((hm("18:00"), hm("19:30")),), 1),
        ]
        if not info.out_tonight:
            weekend.append(Category("weekend_late", 1.0, ((hm("20:00"), hm("22:30")),), 99))
        return weekend
    work_end = hm("16:15") if info.trip_depart else hm("17:50")
    cats = [
        Category("work", 6.0, ((hm("08:30"), hm("11:45")), (hm("13:00"), work_end)), 99),
        Category("lunch", 0.7, ((hm("12:00"), hm("12:45")),), 1),
        Category("early", 0.6, ((hm("06:35"), hm("07:25")),), 1),
    ]
    if not info.wfh:
        cats.append(Category("commute", 0.5, ((hm("07:45"), hm("08:15")),), 1))
    if not info.trip_depart:
        cats.append(Category("evening_early", 1.4, ((hm("18:35"), hm("19:45")),), 2))
    if not info.trip_depart and not info.out_tonight:
        cats.append(Category("evening_late", 1.8, ((hm("20:05"), hm("22:30")),), 99))
        cats.append(Category("night", 0.15, ((hm("23:00"), hm("23:35")),), 1))
    return cats


def home_only(themes: Sequence[tuple[str, float]], info: DayInfo) -> list[tuple[str, float]]:
    """Drop at-home evening themes when Maya is out tonight."""
    if not info.out_tonight:
        return list(themes)
    return [(name, w) for name, w in themes if name not in AT_HOME_THEMES]


def filler_specs(
    rng: random.Random, cat: str, info: DayInfo, minute: int, plan: DayPlan
) -> list[Spec]:
    themes: Sequence[tuple[str, float]]
    size = 2
    if cat == "work":
        return work_episode(rng, phases_at(info, minute), plan)
    if cat == "lunch":
        themes = (("lunch", 1.0),)
    elif cat == "early":
        themes = (("breakfast", 2.0), ("run", 1.0))
    elif cat == "commute":
        themes = (("commute", 1.0),)
    elif cat == "evening_early":
        themes = EVENING_EARLY
    elif cat == "evening_late":
        themes = home_only(EVENING_LATE, info)
    elif cat == "night":
        themes, size = (("wellbeing", 1.0), ("reading", 1.0)), 1
    elif cat == "weekend_morning":
        themes = WEEKEND_MORNING
    elif cat == "weekend_midday":
        themes = WEEKEND_MIDDAY
    elif cat == "weekend_dinner":
        themes, size = home_only(WEEKEND_DINNER, info), 1
    elif cat == "weekend_late":
        themes = WEEKEND_LATE
    elif cat in ("trip", "trip_morning", "trip_evening"):
        themes = ((cat, 1.0),)
    else:
        raise ValueError(cat)
    return theme_episode(rng, themes, size, plan)


def schedule_day(
    rng: random.Random, info: DayInfo, tl: Timeline, quota: int, usage: dict[Spec, int]
) -> list[Planned]:
    plan = DayPlan(rng, quota, usage)

    # 1. Milestones (including follow-up episodes of earlier milestones).
    for m in MILESTONES:
        mday = tl.milestone_days[m.key]
        for offset, at, specs in m.episodes:
            if mday + offset == info.index:
                plan.place(hm(at), specs, shift=True, force=True, hold=50)

    # Someone at the centre of today's milestone gets no routine memories too.
    today_people = {k for item in plan.items for k in item.spec.people if k in SOLO_PEOPLE}
    plan.blocked |= {
        spec
        for pool in LIFE_THEMES.values()
        for spec in pool
        if any(k in today_people for k in spec.people)
    }

    if info.wfh:
        plan.blocked.update((*OFFICE_ONLY, *OFFICE_ONLY_LUNCH))

    # 2. Recurring schedule.
    wd = info.weekday
    if not info.weekend:
        plan.place(
            hm("09:15"),
            [STANDUP, *pick(rng, AFTER_STANDUP, rng.randint(0, 2), plan)],
            shift=True,
            hold=15,
        )
        if wd == MON:
            plan.place(
                hm("10:00"),
                [PLANNING, *pick(rng, GENERAL_WORK, rng.randint(0, 1), plan)],
                shift=True,
                hold=30,
            )
        if wd == TUE:
            plan.place(
                hm("11:00"),
                [JONAS_1ON1, *([JONAS_FOLLOWUP] if rng.random() < 0.5 else [])],
                shift=True,
                hold=30,
            )
        atlas_pool = PROJECT_POOLS["atlas"].get(phases_at(info, hm("14:00"))["atlas"], ())
        if wd == WED and atlas_pool:
            plan.place(
                hm("14:00"), [ATLAS_SYNC, *pick(rng, atlas_pool, 1, plan)], shift=True, hold=30
            )
        beacon_pool = PROJECT_POOLS["beacon"].get(phases_at(info, hm("10:30"))["beacon"], ())
        if wd == THU and beacon_pool:
            plan.place(
                hm("10:30"), [BEACON_SYNC, *pick(rng, beacon_pool, 1, plan)], shift=True, hold=30
            )
        if wd == THU:
            plan.place(hm("16:00"), [PRIYA_1ON1], shift=True, hold=30)
        if wd == FRI and not info.trip_depart:
            plan.place(hm("15:30"), [RETRO if (info.index // 7) % 2 else DEMO], shift=True, hold=30)
        hiring_pool = PROJECT_POOLS["hiring"].get(info.phases["hiring"], ())
        if wd in (TUE, THU) and info.phases["hiring"] in ("interviewing", "shortlist"):
            plan.place(
                hm("13:30"), pick(rng, hiring_pool, rng.randint(1, 2), plan), shift=True, hold=30
            )
        if wd in (TUE, THU) and info.index != tl.milestone_days["life_fever"]:
            plan.place(
                rng.randint(hm("06:35"), hm("06:55")), LIFE_THEMES["run"], shift=True, hold=40
            )
        if rng.random() < 0.5:
            plan.place(rng.randint(hm("17:40"), hm("18:05")), [WRAP_UP], shift=True)
        if info.drinks:
            plan.place(rng.randint(hm("19:50"), hm("20:10")), [DRINKS], shift=True, hold=120)
    elif not info.trip:
        if wd == SAT and info.index != tl.milestone_days["life_race"]:
            plan.place(
                rng.randint(hm("08:00"), hm("08:40")), LIFE_THEMES["long_run"], shift=True, hold=90
            )
        if wd == SUN:
            plan.place(rng.randint(hm("20:15"), hm("20:45")), [WEEKLY_REVIEW], shift=True)

    # 3. Fillers until the quota is reached.
    cats = categories_for(info)
    used: dict[str, int] = {}
    exhausted: list[str] = []
    guard = 0
    while plan.remaining > 0 and guard < 400:
        guard += 1
        open_cats = [
            c for c in cats if c.name not in exhausted and used.get(c.name, 0) < c.max_per_day
        ]
        if not open_cats:
            break
        cat = rng.choices(open_cats, weights=[c.weight for c in open_cats], k=1)[0]
        placed = False
        for _ in range(25):
            lo, hi = rng.choice(cat.windows)
            start = rng.randint(lo, hi)
            if not plan.is_free(start):
                continue
            episode = filler_specs(rng, cat.name, info, start, plan)
            if plan.place(start, episode, shift=False):
                placed = True
                break
        if placed:
            used[cat.name] = used.get(cat.name, 0) + 1
        else:
            exhausted.append(cat.name)
    plan.allow_repeats = True  # very high quotas: squeeze in single memories
    while plan.remaining > 0:
        cat = rng.choices(cats, weights=[c.weight for c in cats], k=1)[0]
        lo, hi = rng.choice(cat.windows)
        start = rng.randint(lo, hi)
        plan.place(
            start, filler_specs(rng, cat.name, info, start, plan)[:1], shift=False, force=True
        )

    return sorted(plan.items, key=lambda p: p.second)


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


class SlotFiller(dict[str, str]):
    """format_map mapping that fills missing slots randomly, recursively."""

    def __init__(
        self, rng: random.Random, slots: Mapping[str, tuple[str, ...]], fixed: Mapping[str, str]
    ) -> None:
        super().__init__(fixed)
        self._rng = rng
        self._slots = slots

    def __missing__(self, key: str) -> str:
        options = self._slots.get(key)
        if not options:
            raise KeyError(key)
        value = self._rng.choice(options)
        if "{" in value:
            value = value.format_map(self)
        self[key] = value
        return value


SENTENCE_END = re.compile(r"[.!?]['\"]?(?=\s|$)")


def sentence_count(text: str) -> int:
    return len(SENTENCE_END.findall(text))


def clamp(value: float, lo: float, hi: float) -> float:
    rounded = round(min(max(value, lo), hi), 2)
    return 0.0 if rounded == 0 else rounded


PERSONAL_KINDS = ("social", "family", "hobby", "travel", "health")


def coda_pool(spec: Spec) -> tuple[str, ...]:
    """Neutral codas for the kind; upbeat ones only for positive personal memories."""
    if spec.valence >= 0.3 and spec.kind in PERSONAL_KINDS:
        return CODAS[spec.kind] + POSITIVE_CODAS
    if spec.valence <= -0.3:
        return CODAS[spec.kind] + NEGATIVE_CODAS
    return CODAS[spec.kind]


def slots_at(info: DayInfo, minute: int) -> Mapping[str, tuple[str, ...]]:
    """Day slots, with status lines updated after a same-day milestone."""
    if not any(minute > at for at, _, _ in info.switches.values()):
        return info.slots
    return {**info.slots, **phase_slots(phases_at(info, minute))}


def fixed_at(info: DayInfo, minute: int) -> Mapping[str, str]:
    """Fixed context, with references pointing at a milestone earlier today."""
    passed = {p: event for p, (at, _, event) in info.switches.items() if minute > at}
    if not passed:
        return info.fixed
    return {**info.fixed, **{f"ref_{p}": f"{event} today" for p, event in passed.items()}}


def render(
    rng: random.Random, spec: Spec, info: DayInfo, minute: int, seen: set[str]
) -> tuple[str, list[str], str]:
    """Return (content, people, location) for a spec, avoiding seen contents."""
    slots = slots_at(info, minute)
    fixed = fixed_at(info, minute)
    content = ""
    people: list[str] = []
    location = ""
    for attempt in range(MAX_RENDER_ATTEMPTS):
        filler = SlotFiller(rng, slots, fixed)
        people = []
        for key in spec.people:
            if key.startswith("@"):
                group = key[1:]
                person = rng.choice(GROUPS[group])
                filler[group] = PEOPLE[person][1]
            else:
                person = key
            full = PEOPLE[person][0]
            if full not in people:
                people.append(full)
        content = rng.choice(spec.texts).format_map(filler)
        sentences = sentence_count(content)
        forced = attempt >= MAX_RENDER_ATTEMPTS // 2 and sentences < 3
        wants_coda = forced or (sentences == 1 and rng.random() < CODA_PROBABILITY)
        if wants_coda and spec not in MILESTONE_SPECS:
            content = f"{content} {rng.choice(coda_pool(spec))}"
        location = rng.choice(spec.locations)
        if location == "@work":
            location = info.work_location
        location = location.format_map(filler)
        if content not in seen:
            break
    seen.add(content)
    return content, people, location


def pick_topics(rng: random.Random, spec: Spec) -> list[str]:
    count = rng.randint(1, min(3, len(spec.topics)))
    extra = rng.sample(list(spec.topics[1:]), count - 1)
    return [spec.topics[0], *extra]


def to_utc(day: date, second: int) -> datetime:
    local = datetime.combine(day, time(0, 0), tzinfo=LOCAL_TZ) + timedelta(seconds=second)
    return local.astimezone(UTC)


def allocate(count: int, weights: Sequence[float]) -> list[int]:
    """Split ``count`` over days proportionally to ``weights`` (largest remainder)."""
    total = sum(weights)
    raw = [count * w / total for w in weights]
    quotas = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - quotas[i]), i))
    for i in order[: count - sum(quotas)]:
        quotas[i] += 1
    return quotas


def day_weight(info: DayInfo) -> float:
    if info.trip:
        return 0.6
    if info.weekend:
        return 0.8
    return 1.3


def generate(seed: int, count: int, start: date, weeks: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    tl = build_timeline(start, weeks)
    infos = [day_info(d, tl) for d in range(tl.total_days)]
    quotas = allocate(count, [day_weight(i) for i in infos])

    seen: set[str] = set()
    stamped: list[tuple[datetime, Planned, DayInfo]] = []
    usage: dict[Spec, int] = {}  # looked up only, never iterated
    for info, quota in zip(infos, quotas, strict=True):
        for planned in schedule_day(rng, info, tl, quota, usage):
            stamped.append((to_utc(info.date, planned.second), planned, info))

    edit_count = round(len(stamped) * EDIT_FRACTION)
    edited = set(rng.sample(range(len(stamped)), edit_count))  # membership only

    records: list[dict[str, object]] = []
    previous: datetime | None = None
    for index, (created, planned, info) in enumerate(stamped, start=1):
        spec = planned.spec
        if previous is not None and created <= previous:
            created = previous + timedelta(seconds=rng.randint(20, 90))
        previous = created
        content, people, location = render(rng, spec, info, planned.second // 60, seen)
        updated = created
        if index - 1 in edited:
            updated = created + timedelta(minutes=rng.randint(45, 360), seconds=rng.randint(0, 59))
        records.append(
            {
                "id": f"mem-{index:05d}",
                "content": content,
                "created_at": created.isoformat(),
                "updated_at": updated.isoformat(),
                "metadata": {
                    "kind": spec.kind,
                    "people": people,
                    "project": PROJECT_NAMES[spec.project] if spec.project else None,
                    "topics": pick_topics(rng, spec),
                    "importance": clamp(spec.importance + rng.uniform(-0.05, 0.05), 0.0, 1.0),
                    "emotional_valence": clamp(spec.valence + rng.uniform(-0.1, 0.1), -1.0, 1.0),
                    "location": location,
                },
            }
        )
    return records


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date: {text!r}") from exc


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate deterministic sample memories (JSON Lines) for biomem.",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--count",
        type=positive_int,
        default=DEFAULT_COUNT,
        help=f"number of memories (default {DEFAULT_COUNT})",
    )
    parser.add_argument(
        "--start",
        type=iso_date,
        default=DEFAULT_START,
        help=f"first day, ISO date (default {DEFAULT_START.isoformat()})",
    )
    parser.add_argument(
        "--weeks",
        type=positive_int,
        default=DEFAULT_WEEKS,
        help=f"number of weeks covered (default {DEFAULT_WEEKS})",
    )
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="output file, or '-' for stdout (default samples/memories.jsonl in the repo)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed: int = args.seed
    count: int = args.count
    start: date = args.start
    weeks: int = args.weeks
    output: str = args.output

    records = generate(seed, count, start, weeks)
    text = "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
        for r in records
    )
    if output == "-":
        sys.stdout.buffer.write(text.encode("utf-8"))  # UTF-8 whatever the locale
        sys.stdout.flush()
        target = "stdout"
    else:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        target = str(path)
    first = records[0]["created_at"] if records else "-"
    last = records[-1]["created_at"] if records else "-"
    sys.stderr.write(
        f"wrote {len(records)} memories ({first} .. {last}, seed {seed}) to {target}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
