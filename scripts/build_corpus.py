"""Gather every recorded listing paper into data/corpus/recorded_listings.jsonl.gz (for training).

    .venv/bin/python scripts/build_corpus.py /work/shared/data

One JSON object per distinct arXiv id: ``{"id", "title", "abstract", "categories", "source", "date"}``
from arxiv_bulk, hf_daily_papers, arxiv_api, arxiv_rss and extra_abstracts (see that folder's
SOURCES.md). Titles and abstracts have their whitespace collapsed; nothing else is changed. The seed
papers (labels/seed_topics.jsonl) are left out on purpose: they are the tagger's held-out check.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "data" / "corpus" / "recorded_listings.jsonl.gz"
ATOM = "{http://www.w3.org/2005/Atom}"


def main(shared: str) -> None:
    papers: dict[str, dict[str, object]] = {}
    seed = {json.loads(line)["id"] for line in open(f"{shared}/labels/seed_topics.jsonl", encoding="utf-8")}

    def add(pid: str, title: str, abstract: str, source: str, date: str, cats: list[str]) -> None:
        pid = re.sub(r"v\d+$", "", pid.strip())
        title, abstract = " ".join(title.split()), " ".join(abstract.split())
        if title and pid not in papers and pid not in seed:
            papers[pid] = {"id": pid, "title": title, "abstract": abstract, "categories": cats,
                           "source": source, "date": date}

    for f in sorted(glob.glob(f"{shared}/arxiv_bulk/*.jsonl")):
        date = re.search(r"(\d{4}-\d\d-\d\d)", f).group(1)  # type: ignore[union-attr]
        for line in open(f, encoding="utf-8"):
            o = json.loads(line)
            add(o["id"], o["title"], o.get("summary") or "", "arxiv_bulk", date, o.get("categories") or [])
    for f in sorted(glob.glob(f"{shared}/hf_daily_papers/*.json")):
        date = re.search(r"(\d{4}-\d\d-\d\d)", f).group(1)  # type: ignore[union-attr]
        for e in json.load(open(f, encoding="utf-8")):
            p = e.get("paper", e)
            add(p["id"], p.get("title") or e.get("title", ""), p.get("summary") or e.get("summary", ""),
                "hf_daily_papers", date, [])
    for f in sorted(glob.glob(f"{shared}/arxiv_api/*.xml")):
        root = ET.parse(f).getroot()
        for e in root.findall(ATOM + "entry"):
            i = e.findtext(ATOM + "id") or ""
            if "/abs/" in i:
                add(i.split("/abs/")[-1], e.findtext(ATOM + "title") or "", e.findtext(ATOM + "summary") or "",
                    "arxiv_api", (e.findtext(ATOM + "published") or "")[:10],
                    [c.get("term") or "" for c in e.findall(ATOM + "category")])
    for f in sorted(glob.glob(f"{shared}/arxiv_rss/*.xml")):
        root = ET.parse(f).getroot()
        for item in root.iter("item"):
            desc = item.findtext("description") or ""
            m = re.match(r"arXiv:(\S+?)(v\d+)? Announce", desc)
            if m:
                add(m.group(1), item.findtext("title") or "", desc.split("Abstract:", 1)[-1], "arxiv_rss",
                    item.findtext("pubDate") or "", [c.text or "" for c in item.findall("category")])
    for line in open(f"{shared}/extra_abstracts/extra_abstracts.jsonl", encoding="utf-8"):
        o = json.loads(line)
        add(o["id"], o["title"], o["abstract"], "extra_abstracts", "", [])
    rows = "\n".join(json.dumps(p, ensure_ascii=False, sort_keys=True) for p in papers.values()) + "\n"
    OUT.write_bytes(gzip.compress(rows.encode("utf-8"), compresslevel=9, mtime=0))
    print(f"wrote {OUT}: {len(papers)} papers")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
