#!/usr/bin/env python3
"""Check every relative link in the repository's Markdown files; Python 3 standard library only.

    python3 tools/check-links.py              # check the repository this file is in; exit 1 if a link is broken
    python3 tools/check-links.py --self-test  # run the checker on a small built-in tree and check what it finds

Files checked: `git ls-files '*.md'` (plus untracked files git does not ignore, so a new page is checked before
its first commit). Links checked: inline `[text](target)` and `![alt](target)`, reference definitions
`[label]: target`, and `href`/`src` attributes in raw HTML, outside code spans and fenced code blocks. A link with
a scheme (`https:`, `mailto:`) is not fetched. A target must be a file or folder git tracks (or would track); its
`#anchor` must match a heading of the target Markdown file as GitHub slugs it (lower case, punctuation dropped,
spaces to hyphens, `-1`, `-2` for repeats) or an explicit `id`/`name`; `#L10` / `#L10-L20` on another file must
be within its lines. Each broken link prints as `file:line: link  (why)`.

Known-broken links can be listed in tools/check-links.allow, one `file: link` a line: they are still printed,
marked "allowed", and do not fail the check; an entry whose link works again is reported so it can be deleted.
"""

import os
import re
import subprocess
import sys
import tempfile
import unicodedata
from urllib.parse import unquote

ALLOW_FILE = "tools/check-links.allow"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one level of nested brackets allowed
    r"\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"  # (target
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"  # optional "title")
)
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ATTR = re.compile(r"<[a-zA-Z][^>]*?\s(?:href|src)\s*=\s*[\"']([^\"']*)[\"']")
HTML_ID = re.compile(r"<[a-zA-Z][^>]*?\s(?:id|name)\s*=\s*[\"']([^\"']*)[\"']")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")


def slug(heading):
    """GitHub's anchor for a heading: its text as rendered, lower case, keeping letters, marks, digits, `_`, `-`
    and spaces, spaces then turned into hyphens (github-slugger)."""
    parts = re.split(r"(`+.+?`+)", heading)
    text = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span: its content, literally
            text.append(part.strip("`"))
            continue
        part = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", part)  # links: their text
        part = re.sub(r"<[^>]+>", "", part)  # raw HTML tags
        part = re.sub(r"\\(.)", r"\1", part)  # backslash escapes
        part = part.replace("*", "")  # emphasis (a literal * is dropped below anyway)
        part = re.sub(r"(?<![\w])_+(\S(?:.*?\S)?)_+(?![\w])", r"\1", part)  # _emphasis_, not snake_case
        text.append(part)
    kept = []
    for c in "".join(text).strip().lower():
        if c in " -_" or unicodedata.category(c)[0] in "LMN":
            kept.append(c)
    return "".join(kept).replace(" ", "-")


def scan(text):
    """Yield (line number, line with code spans blanked) for the lines outside fenced code blocks."""
    fence = None
    in_comment = False
    for number, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):]:
                fence = None
            continue
        if in_comment or "<!--" in line:
            start = 0 if in_comment else line.index("<!--")
            end = line.find("-->", start)
            in_comment = end < 0
            line = line[:start] + ("" if in_comment else line[end + 3:])
        yield number, CODE_SPAN.sub(lambda s: "`" + " " * len(s.group(2)) + "`", line)


def anchors(text):
    """The anchors a Markdown file offers: its headings' slugs (with GitHub's -1, -2 for repeats) and explicit ids."""
    found, seen = set(), {}
    previous = None
    raw_lines = text.split("\n")
    code_lines = {n for n in range(1, len(raw_lines) + 1)} - {n for n, _ in scan(text)}
    for number, line in enumerate(raw_lines, 1):
        if number in code_lines:
            previous = None
            continue
        heading = None
        m = ATX.match(line)
        if m:
            heading = m.group(2) or ""
        elif previous and SETEXT.match(line) and not (set(line.strip()) == {"-"} and not previous.strip()):
            heading = previous.strip()
        if heading is not None:
            base = slug(heading)
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
            previous = None
        else:
            previous = line if line.strip() and not line.startswith(("    ", "\t", "|", "- ", "* ")) else None
        found.update(HTML_ID.findall(line))
    return found


def links(text):
    """Yield (line number, target) for every link in a Markdown text."""
    for number, line in scan(text):
        for m in INLINE.finditer(line):
            yield number, m.group(1)
        m = REFDEF.match(line)
        if m:
            yield number, m.group(1)
        for target in HTML_ATTR.findall(line):
            yield number, target


def check(root, md_files, known):
    """Broken links as (file, line, link, why). `known`: the repository's paths (files and folders), relative."""
    texts = {}

    def read(path):
        if path not in texts:
            with open(os.path.join(root, path), encoding="utf-8") as f:
                texts[path] = f.read()
        return texts[path]

    anchor_cache = {}
    broken = []
    for md in sorted(md_files):
        for number, link in links(read(md)):
            target = link[1:-1] if link.startswith("<") and link.endswith(">") else link
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            path, _, anchor = target.partition("#")
            path = unquote(path.split("?", 1)[0])
            anchor = unquote(anchor)
            if path:
                base = "" if path.startswith("/") else os.path.dirname(md)
                resolved = os.path.normpath(os.path.join(base, path.lstrip("/")))
                if resolved == "." or resolved.startswith(".."):
                    broken.append((md, number, link, "outside the repository"))
                    continue
            else:
                resolved = md
            if resolved not in known:
                broken.append((md, number, link, "no such file in the repository"))
                continue
            if not anchor:
                continue
            if resolved not in md_files and os.path.isdir(os.path.join(root, resolved)):
                readme = os.path.join(resolved, "README.md")
                if readme not in known:
                    broken.append((md, number, link, "an anchor on a folder without a README.md"))
                    continue
                resolved = readme
            if resolved.lower().endswith((".md", ".markdown")):
                if resolved not in anchor_cache:
                    anchor_cache[resolved] = anchors(read(resolved))
                if anchor not in anchor_cache[resolved]:
                    broken.append((md, number, link, f"no heading or id '{anchor}' in {resolved}"))
            else:
                m = LINE_ANCHOR.match(anchor)
                if m:
                    with open(os.path.join(root, resolved), encoding="utf-8", errors="replace") as f:
                        lines = f.read().count("\n") + 1
                    if int(m.group(2) or m.group(1)) > lines:
                        broken.append((md, number, link, f"{resolved} has {lines} lines"))
    return broken


def git_paths(root):
    """Markdown files to check, and every path (file or folder) a link may point at."""

    def ls(*args):
        out = subprocess.run(["git", "-C", root, "ls-files", "-z", *args], check=True, capture_output=True).stdout
        return [p for p in out.decode("utf-8").split("\0") if p]

    files = {p for p in ls("--cached", "--others", "--exclude-standard") if os.path.lexists(os.path.join(root, p))}
    known = set(files)
    for p in files:
        d = os.path.dirname(p)
        while d:
            known.add(d)
            d = os.path.dirname(d)
    md = {p for p in files if p.lower().endswith(".md")}
    return md, known


def read_allow(root):
    """The allow-list: {(file, link): line number in the allow file}."""
    path = os.path.join(root, ALLOW_FILE)
    allow = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith("#"):
                    file, _, link = line.partition(": ")
                    allow[(file.strip(), link.strip())] = number
    return allow


def report(broken, allow, out=sys.stdout):
    """Print the broken links; return how many are not allowed."""
    failing = 0
    used = set()
    for md, number, link, why in broken:
        if (md, link) in allow:
            used.add((md, link))
            print(f"{md}:{number}: {link}  ({why}; allowed by {ALLOW_FILE}:{allow[(md, link)]})", file=out)
        else:
            failing += 1
            print(f"{md}:{number}: {link}  ({why})", file=out)
    for (md, link), number in sorted(allow.items(), key=lambda kv: kv[1]):
        if (md, link) not in used:
            print(f"{ALLOW_FILE}:{number}: '{md}: {link}' is not broken any more: delete the line", file=out)
    return failing


def self_test():
    """Run the checker on a small tree and compare what it finds with what it should."""
    cases = {
        "Where this differs from the released code (github.com/tomsherborne/tram_optimizer), and choices":
            "where-this-differs-from-the-released-code-githubcomtomsherbornetram_optimizer-and-choices",
        "Appendix Tables 9–14": "appendix-tables-914",
        "Table 2 — `results/table2-embedded.csv`": "table-2--resultstable2-embeddedcsv",
        "The *released* code, **measured**": "the-released-code-measured",
        "ε-sharpness of TRAM-θ_0 and `snake_case`": "ε-sharpness-of-tram-θ_0-and-snake_case",
        "_Emphasis_ and [a link](x.md)": "emphasis-and-a-link",
        "The paper's tables": "the-papers-tables",
    }
    failures = [f"slug({h!r}) = {slug(h)!r}, expected {s!r}" for h, s in cases.items() if slug(h) != s]
    tree = {
        "README.md": "\n".join([
            "# Top",  # 1
            "[ok](docs/a.md) [ok](docs/a.md#section-one) [ok](#top) [ok](docs/) [ok](https://example.org/x)",  # 2
            "[missing file](docs/nope.md)",  # 3
            "[missing anchor](docs/a.md#section-three)",  # 4
            "`[in a code span](nope.md)` and [ok, repeated heading](docs/a.md#section-one-1)",  # 5
            "```",  # 6
            "[in a fence](nope.md)",  # 7
            "```",  # 8
            "[ref]: docs/missing.md",  # 9
            '<a href="docs/a.md#explicit">ok</a> ![image](img.png) [lines](tool.py#L3) [too far](tool.py#L9)',  # 10
            "[outside](../x.md) [allowed](docs/later.md)",  # 11
        ]),
        "docs/a.md": "\n".join([
            "# Section one", "text [up](../README.md#top)", "Section one", "===========",
            '<a id="explicit"></a>', "## Section two", "[bad up](../README.md#nowhere)",
        ]),
        "img.png": "",
        "tool.py": "1\n2\n3\n",
    }
    expected = [
        ("README.md", 3, "docs/nope.md"),
        ("README.md", 4, "docs/a.md#section-three"),
        ("README.md", 9, "docs/missing.md"),
        ("README.md", 10, "tool.py#L9"),
        ("README.md", 11, "../x.md"),
        ("README.md", 11, "docs/later.md"),
        ("docs/a.md", 7, "../README.md#nowhere"),
    ]
    with tempfile.TemporaryDirectory() as root:
        for path, text in tree.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w", encoding="utf-8") as f:
                f.write(text)
        known = set(tree) | {"docs"}
        broken = check(root, {p for p in tree if p.endswith(".md")}, known)
    got = [(md, n, link) for md, n, link, _ in broken]
    if got != expected:
        failures.append(f"broken links: got {got}, expected {expected}")
    allow = {("README.md", "docs/later.md"): 1, ("README.md", "fine.md"): 2}
    with open(os.devnull, "w") as null:
        if report(broken, allow, out=null) != len(expected) - 1:
            failures.append("an allowed link counted as failing")
    for f in failures:
        print("self-test: " + f)
    print(f"self-test: {len(cases)} slugs, {len(expected)} broken links of a small tree: "
          + ("ok" if not failures else "FAILED"))
    return 1 if failures else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if argv[1:]:
        print("\n\n".join(__doc__.strip().split("\n\n")[:2]), file=sys.stderr)
        return 2
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    md_files, known = git_paths(root)
    broken = check(root, md_files, known)
    failing = report(broken, read_allow(root))
    print(f"check-links: {len(md_files)} Markdown files, {len(broken)} broken links, {failing} not allowed",
          file=sys.stderr)
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
