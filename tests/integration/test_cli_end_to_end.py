"""The whole job through the real CLI, in a fresh folder, as a new user would run it."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def digest(cwd: Path, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "digest", *args], cwd=cwd, capture_output=True, text=True,
                          input=stdin, timeout=180, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    if check and proc.returncode != 0:
        raise AssertionError(f"digest {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """An empty folder: the embedded demo (seed listing, demo subscribers) comes from the package."""
    return tmp_path


def _messages(outbox: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(outbox.glob("*.eml"))]


def test_run_leaves_one_valid_email_per_demo_subscriber(demo_dir: Path) -> None:
    proc = digest(demo_dir, "run")
    assert "source=seed new=77 updated=0 errors=0" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "sent=3 skipped=0 failed=0"
    messages = _messages(demo_dir / "var" / "outbox")
    assert sorted(str(m["To"]) for m in messages) == ["ada@example.org", "alan@example.org", "grace@example.org"]

    papers = [json.loads(line) for line in digest(demo_dir, "papers", "list", "--json").stdout.splitlines()]
    topics_by_title = {p["title"]: set(p["topics"]) for p in papers}
    wanted = {"ada@example.org": {"pruning", "nas"}, "grace@example.org": {"diffusion"},
              "alan@example.org": {"subspace"}}
    for msg in messages:
        assert msg.get_content_type() == "multipart/alternative"
        for header in ("Message-ID", "Date", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post"):
            assert msg[header], header
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert len(html.encode()) < 102 * 1024
        included = [t for t in topics_by_title if t in text]
        assert included, f"no paper in the mail to {msg['To']}"
        for title in included:
            assert topics_by_title[title] & wanted[str(msg["To"])], (msg["To"], title)


def test_send_again_delivers_nothing_new(demo_dir: Path) -> None:
    digest(demo_dir, "run")
    proc = digest(demo_dir, "send")
    assert proc.stdout.strip().splitlines()[-1] == "sent=0 skipped=3 failed=0"
    assert len(list((demo_dir / "var" / "outbox").glob("*.eml"))) == 3


def test_broken_config_exits_2_with_one_line(demo_dir: Path) -> None:
    (demo_dir / "broken.toml").write_text("[smtp]\nport = 'twenty-five'\n")
    proc = digest(demo_dir, "--config", "broken.toml", "send", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "smtp.port" in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["[smtp\n", "[mailer]\nbackend = 'pigeon'\n", "[whatever]\nx = 1\n"])
def test_other_broken_configs(demo_dir: Path, text: str) -> None:
    (demo_dir / "broken.toml").write_text(text)
    proc = digest(demo_dir, "--config", "broken.toml", "fetch", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_preview_writes_a_page(demo_dir: Path) -> None:
    digest(demo_dir, "fetch")
    digest(demo_dir, "subscribers", "add", "r@example.org", "--topics", "diffusion")
    digest(demo_dir, "preview", "--subscriber", "r@example.org", "--format", "html", "--out", "f.html")
    page = (demo_dir / "f.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "</html>" in page
    text = digest(demo_dir, "preview", "--subscriber", "r@example.org", "--format", "text").stdout
    assert "Diffusion" in text
    eml = digest(demo_dir, "preview", "--subscriber", "r@example.org", "--format", "eml").stdout
    assert "multipart/alternative" in eml
    assert not (demo_dir / "var" / "outbox").exists()  # preview sends and records nothing


def test_preview_of_a_past_date_shows_what_was_sent(demo_dir: Path) -> None:
    # A seed listing of our own in ./seeds, which the default config path finds before the shipped one.
    (demo_dir / "seeds").mkdir()
    shutil.copy(REPO / "digest" / "defaults" / "hf_papers_search.txt", demo_dir / "seeds" / "hf_papers_search.txt")
    digest(demo_dir, "run", "--date", "2026-08-18", "--force")
    [msg] = [m for m in _messages(demo_dir / "var" / "outbox") if str(m["To"]) == "grace@example.org"]
    sent_text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # A new diffusion paper arriving later must not change what the stored issue shows.
    title = "Yet Another Latent Diffusion Model For Tests"
    with open(demo_dir / "seeds" / "hf_papers_search.txt", "a", encoding="utf-8") as fh:
        fh.write(f"\n\n{title}\n\n" + "We train a latent diffusion model with a new sampler. " * 5 + "\n")
    assert "new=1" in digest(demo_dir, "fetch").stdout
    past = digest(demo_dir, "preview", "--subscriber", "grace@example.org", "--date", "2026-08-18",
                  "--format", "text").stdout
    assert title not in past
    assert [line for line in past.splitlines() if line[:3].strip().rstrip(".").isdigit()] == \
        [line for line in sent_text.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    fresh = digest(demo_dir, "preview", "--subscriber", "grace@example.org", "--format", "text").stdout
    assert title in fresh


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["subscribers", "add", "not-an-address"], "invalid email"),
        (["subscribers", "add", "a@example.org", "--topics", "astrology"], "unknown topic"),
        (["subscribers", "add", "a@example.org", "--tz", "Mars/Olympus"], "unknown time zone"),
        (["subscribers", "add", "a@example.org", "--send-at", "25:99"], "invalid time"),
        (["send", "--date", "2026-13-45"], "invalid date"),
        (["preview", "--subscriber", "not-an-address"], "invalid email"),
        (["preview", "--subscriber", "nobody@example.org"], "no subscriber"),
    ],
)
def test_bad_input_exits_2(demo_dir: Path, args: list[str], needle: str) -> None:
    digest(demo_dir, "subscribers", "add", "someone@example.org")
    proc = digest(demo_dir, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [
    ["status"], ["papers", "list"], ["subscribers", "list"], ["subscribers", "remove", "a@example.org"],
    ["subscribers", "update", "a@example.org", "--max-papers", "3"], ["send"], ["send", "--dry-run"],
    ["preview", "--subscriber", "a@example.org"], ["tag"],
])
def test_commands_that_find_no_database_say_so_and_create_none(tmp_path: Path, args: list[str]) -> None:
    proc = digest(tmp_path, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: no database at {tmp_path / 'var' / 'digest.sqlite3'} " \
        "(`digest run` or `digest fetch` creates it; or pass --config)\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["fetch"], ["subscribers", "add", "a@example.org"]])
def test_commands_meant_to_start_a_database_create_it(tmp_path: Path, args: list[str]) -> None:
    digest(tmp_path, *args)
    assert (tmp_path / "var" / "digest.sqlite3").is_file()
    assert digest(tmp_path, "status").returncode == 0


def test_subscribers_round_trip_and_import(demo_dir: Path) -> None:
    digest(demo_dir, "subscribers", "add", "ada@example.org", "--topics", "pruning,nas", "--keywords", "sparsity",
           "--authors", "Song Han;Yann LeCun", "--frequency", "weekly", "--send-at", "07:30",
           "--tz", "Europe/London", "--max-papers", "5")
    digest(demo_dir, "subscribers", "update", "ada@example.org", "--topics", "diffusion")
    (demo_dir / "people.csv").write_text(
        "email,name,topics,keywords,exclude,authors,frequency,send_at,tz,max_papers\n"
        "b@example.org,B,subspace;nas,,medical,,daily,09:00,Asia/Tokyo,7\n"
        "broken-address,X,,,,,,,,\n"
        "c@example.org,,,,,,,,,\n")
    proc = digest(demo_dir, "subscribers", "import", "people.csv", check=False)
    # All or nothing: the bad line is named and nothing is imported until the file is fixed.
    assert proc.returncode == 2 and "people.csv:3" in proc.stderr and "added=0" in proc.stdout
    assert "b@example.org" not in digest(demo_dir, "subscribers", "list").stdout
    (demo_dir / "people.csv").write_text(
        (demo_dir / "people.csv").read_text().replace("broken-address,X,,,,,,,,\n", ""))
    assert "added=2" in digest(demo_dir, "subscribers", "import", "people.csv").stdout
    listed = digest(demo_dir, "subscribers", "list", "--json").stdout.splitlines()
    rows = {r["email"]: r for r in map(json.loads, listed)}
    assert rows["ada@example.org"]["topics"] == ["diffusion"]
    assert rows["ada@example.org"]["authors"] == ["Song Han", "Yann LeCun"]
    assert rows["b@example.org"]["topics"] == ["subspace", "nas"] and rows["b@example.org"]["max_papers"] == 7
    assert rows["c@example.org"]["topics"] == [] and rows["c@example.org"]["status"] == "confirmed"
    digest(demo_dir, "subscribers", "remove", "c@example.org")
    assert "c@example.org" not in digest(demo_dir, "subscribers", "list").stdout


def test_tag_jsonl_and_eval(demo_dir: Path) -> None:
    lines = [json.dumps({"id": "x1", "title": "Structured Pruning of LLMs", "abstract": "We prune heads."}),
             json.dumps({"id": "x2", "title": "A note on weather", "abstract": "Rain."})]
    out = digest(demo_dir, "tag", "--input", "-", "--output", "-", stdin="\n".join(lines) + "\n").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["x1", "x2"]
    assert "pruning" in rows[0]["topics"] and rows[0]["why"]["pruning"] and rows[1]["topics"] == []
    labels = REPO / "tests" / "fixtures" / "labels" / "seed_topics.jsonl"
    report = digest(demo_dir, "tagger-eval", "--labels", str(labels)).stdout.strip().splitlines()
    assert report[-1].startswith("macro_f1=0.") or report[-1] == "macro_f1=1.000"


def test_topic_in_words_explain_and_retag_all(demo_dir: Path) -> None:
    digest(demo_dir, "fetch")
    papers = [json.loads(line) for line in digest(demo_dir, "papers", "list", "--json").stdout.splitlines()]
    diffusion_ids = [p["id"] for p in papers if "diffusion" in p["topics"]][:3]
    assert len(diffusion_ids) == 3
    # A new topic with only a description and examples (stored ids and one inline paper), no pattern.
    (demo_dir / "words.toml").write_text(
        '[topics.generation]\nlabel = "Image generation"\n'
        'description = "Generating or editing images and video with generative models."\n'
        f"examples = {json.dumps(diffusion_ids)[:-1]}, "
        '{ title = "Text-to-image generation", abstract = "A text-to-image generator of photos." }]\n')
    report = digest(demo_dir, "--config", "words.toml", "tagger-eval", "--labels",
                    str(REPO / "tests" / "fixtures" / "labels" / "seed_topics.jsonl"), "--json").stdout
    assert "generation" in json.loads(report.splitlines()[0])["topics"]
    assert digest(demo_dir, "--config", "words.toml", "tag", "--all").stdout.strip() == f"tagged={len(papers)}"
    tagged = [json.loads(line) for line in
              digest(demo_dir, "--config", "words.toml", "papers", "list", "--json").stdout.splitlines()]
    assert sum("generation" in p["topics"] for p in tagged) >= 3
    explained = digest(demo_dir, "--config", "words.toml", "tag", "--explain", diffusion_ids[0]).stdout
    assert "yes diffusion: learned" in explained and "generation: described" in explained
    as_json = json.loads(digest(demo_dir, "tag", "--explain", diffusion_ids[0], "--json").stdout)
    assert {t["topic"] for t in as_json["topics"]} == {"pruning", "diffusion", "subspace", "nas"}
    missing = digest(demo_dir, "tag", "--explain", "0000.00000", check=False)
    assert missing.returncode == 2 and "no stored paper" in missing.stderr
    # An example not fetched yet is left out with a warning: the run goes on from the description.
    (demo_dir / "later.toml").write_text('[topics.x]\nlabel = "X"\ndescription = "Diffusion models for images"'
                                         '\nexamples = ["9999.99999"]\n')
    later = digest(demo_dir, "--config", "later.toml", "tag", "--all")
    assert "example 9999.99999 is not in the store" in later.stderr
    (demo_dir / "bad.toml").write_text('[topics.x]\nlabel = "X"\ndescription = ""\nexamples = ["9999.99999"]\n')
    bad = digest(demo_dir, "--config", "bad.toml", "tag", "--all", check=False)
    assert bad.returncode == 2 and "none of its examples is in the store" in bad.stderr
    assert sum(line.startswith("error:") for line in bad.stderr.splitlines()) == 1


def test_dry_run_records_nothing(demo_dir: Path) -> None:
    digest(demo_dir, "fetch")
    digest(demo_dir, "subscribers", "add", "r@example.org", "--topics", "nas")
    proc = digest(demo_dir, "send", "--dry-run")
    assert "would send" in proc.stdout and "r@example.org" in proc.stdout
    assert not (demo_dir / "var" / "outbox").exists()
    assert digest(demo_dir, "send").stdout.strip().splitlines()[-1] == "sent=1 skipped=0 failed=0"


COMMANDS = [["fetch"], ["tag"], ["tagger-eval"], ["subscribers", "add"], ["subscribers", "update"],
            ["subscribers", "remove"], ["subscribers", "list"], ["subscribers", "import"], ["papers", "list"],
            ["preview"], ["send"], ["status"], ["run"], ["daemon"], ["serve"], ["bench"]]


def test_every_command_has_help_with_an_example() -> None:
    from click.testing import CliRunner

    from digest.cli import cli

    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(cli, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Example" in result.output, f"digest {' '.join(command)} --help has no example"


def test_tagger_eval_finds_examples_in_its_labelled_file_without_a_database(tmp_path: Path) -> None:
    """An evaluation of a topic defined by example ids runs in an empty folder: the examples are looked
    up in the labelled file first, and no database is created for it."""
    (tmp_path / "words.toml").write_text(
        '[topics.gen]\nlabel = "Generative diffusion"\ndescription = "Diffusion models."\n'
        'examples = ["seed-09", "seed-12", "seed-15"]\n')
    labels = REPO / "tests" / "fixtures" / "labels" / "seed_topics.jsonl"
    proc = digest(tmp_path, "--config", "words.toml", "tagger-eval", "--labels", str(labels), "--json")
    assert "not in the store" not in proc.stderr
    assert "gen" in json.loads(proc.stdout.splitlines()[0])["topics"]
    assert not (tmp_path / "var").exists()
