"""Every relative link in README.md points to a file that exists, and a link's anchor into a markdown file to one
of its headings (`make lint`; MkDocs checks docs/, but not the README, which GitHub shows).

Links with a scheme (https:, mailto:) are not checked. Anchors are the ids GitHub gives headings: lower case,
punctuation dropped, spaces turned into hyphens.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# [text](target) and ![alt](target); the target ends at a space (a title) or the closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[^)]*)?\)")
FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def github_anchor(heading: str) -> str:
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = FENCED.sub("", markdown.read_text(encoding="utf-8"))
    return {github_anchor(heading) for heading in HEADING.findall(text)}


def broken_links(readme: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCED.sub("", readme.read_text(encoding="utf-8")))
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue
        path, _, anchor = target.partition("#")
        file = readme.parent / path.split("?", 1)[0] if path else readme
        if not file.exists():
            problems.append(f"{readme.name}: the link {target!r} points to no file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{readme.name}: the link {target!r} points to no heading of {path or readme.name}")
    return problems


def main() -> int:
    problems = broken_links(ROOT / "README.md")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
