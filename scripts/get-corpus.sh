#!/usr/bin/env bash
# Builds the training corpus from Debian packages (public domain or free licences; docs/data.md lists
# sources and licences): corpus/<source>/<document>.txt, plain UTF-8 text, markup stripped.
# Packages are fetched with `apt-get download` and unpacked with `dpkg -x` into .corpus-debs/ (nothing is
# installed into /). Deterministic; safe to run again: a source whose stamp matches its package
# versions is kept. CORPUS_DIR and DEBS_DIR override corpus/ and .corpus-debs/; JOBS the worker count;
# SOURCES a space-separated subset of the sources.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
corpus=${CORPUS_DIR:-$root/corpus}
debs=${DEBS_DIR:-$root/.corpus-debs}
python=${PYTHON:-python3}

# source name -> packages it needs (the first one carries the text; the rest are tools)
declare -A packages=(
  [austen]="r-cran-janeaustenr"
  [kjv]="bible-kjv-text bible-kjv"
  [web]="sword-text-web libsword-utils libsword1.9.0 libclucene-core1v5"
  [jargon]="jargon-text"
  [linux]="linux-doc-6.1"
  [python]="python3.11-doc"
  [perl]="perl-doc"
  [rust]="rust-doc"
  [postgresql]="postgresql-doc-15"
  [debian-reference]="debian-reference-en"
)
sources=(austen kjv web jargon linux python perl rust postgresql debian-reference)
# SOURCES="austen debian-reference" fetches only those (the CPU demo's small slice).
if [ -n "${SOURCES:-}" ]; then
  read -r -a sources <<< "$SOURCES"
  for s in "${sources[@]}"; do
    [ -n "${packages[$s]:-}" ] || { echo "get-corpus: unknown source '$s' (known: ${!packages[*]})" >&2; exit 1; }
  done
fi

command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
  { echo "get-corpus: needs apt-get and dpkg (a Debian or Ubuntu machine)" >&2; exit 1; }

all=()
for s in "${sources[@]}"; do all+=(${packages[$s]}); done
# Candidate versions of all packages from one apt-cache call.
declare -A versions=()
while read -r p v; do
  [ "$v" = "(none)" ] || versions[$p]=$v
done < <(apt-cache policy "${all[@]}" 2>/dev/null | awk '/^[^ ].*:$/ {sub(":$", ""); p=$0} /Candidate:/ {print p, $2}')
version_of() {  # candidate version of a package, or empty when apt does not know it
  echo "${versions[$1]:-}"
}
missing=()
for p in "${all[@]}"; do [ -n "$(version_of "$p")" ] || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "get-corpus: apt knows no package ${missing[*]}; run 'apt-get update' (the packages are in" \
       "Debian 12 bookworm main), or check /etc/apt/sources.list" >&2
  exit 1
fi

mkdir -p "$corpus" "$debs/pkg" "$debs/root"
stamp_of() {  # the package versions a source was built from
  local s=$1 out="" p
  for p in ${packages[$s]}; do out+="$p=$(version_of "$p") "; done
  echo "$out"
}

todo=()
for s in "${sources[@]}"; do
  if [ -f "$corpus/$s/.stamp" ] && [ "$(cat "$corpus/$s/.stamp")" = "$(stamp_of "$s")" ]; then
    echo "get-corpus: $s is up to date" >&2
  else
    todo+=("$s")
  fi
done

# Fetch and unpack what the remaining sources need (one unpacked tree per package version).
for s in "${todo[@]}"; do
  for p in ${packages[$s]}; do
    v=$(version_of "$p")
    deb=$(ls "$debs/pkg/${p}_"*.deb 2>/dev/null | grep -F "_${v#*:}_" | head -n1 || true)
    if [ -z "$deb" ]; then
      echo "get-corpus: downloading $p $v" >&2
      (cd "$debs/pkg" && apt-get download -q "$p=$v" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) ||
        { echo "get-corpus: apt-get download $p=$v failed" >&2; exit 1; }
      deb=$(ls "$debs/pkg/${p}_"*.deb | grep -F "_${v#*:}_" | head -n1)
    fi
    if [ ! -f "$debs/root/.$p.$v" ]; then
      dpkg -x "$deb" "$debs/root"
      touch "$debs/root/.$p.$v"
    fi
  done
done

# The converters (Python 3, standard library only), written out once per run.
cat > "$debs/extract.py" <<'PY'
# Turns one unpacked Debian package tree into plain-text documents: extract.py SOURCE ROOT OUT_DIR.
import concurrent.futures, gzip, html, html.parser, os, pathlib, re, struct, subprocess, sys, zlib

SOURCE, ROOT, OUT = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
JOBS = int(os.environ.get("JOBS") or os.cpu_count() or 1)


def fail(msg):
    sys.exit(f"get-corpus: {SOURCE}: {msg}")


def need(path):
    if not path.exists():
        fail(f"{path} is missing from the unpacked package (did the package layout change?)")
    return path


def tidy(text):
    # Trailing blanks off, runs of blank lines folded to one, one final newline.
    lines = [l.rstrip() for l in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    return text + "\n"


def write(name, text):
    text = tidy(text)
    if len(text) < 200:
        return
    (OUT / f"{name}.txt").write_text(text, encoding="utf-8")


# ---- HTML to text (stdlib html.parser): block elements break lines, <pre> keeps its layout,
# navigation, sidebars, scripts and permalink anchors are dropped.
BLOCK = set("p div br li ul ol dl dt dd h1 h2 h3 h4 h5 h6 pre table tr blockquote section article "
            "hr figure figcaption caption title tbody thead tfoot".split())
SKIP_TAGS = {"script", "style", "nav", "head", "footer", "button", "noscript", "svg"}
SKIP_CLASSES = {"sphinxsidebar", "sphinxsidebarwrapper", "related", "footer", "headerlink",
                "wy-nav-side", "wy-nav-top", "wy-breadcrumbs", "rst-footer-buttons", "rst-versions",
                "navheader", "navfooter", "sidebar", "menu-bar", "nav-chapters", "nav-wrapper",
                "sidetoc", "toc-backref", "visually-hidden"}
VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source", "embed"}


class Text(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip_tag, self.skip_depth, self.pre = [], None, 0, 0

    def handle_starttag(self, tag, attrs):
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth += 1
            return
        cls = set((dict(attrs).get("class") or "").split())
        if tag in SKIP_TAGS or cls & SKIP_CLASSES:
            if tag not in VOID:
                self.skip_tag, self.skip_depth = tag, 1
            return
        if tag == "pre":
            self.pre += 1
        if tag in BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")
        if tag in ("td", "th"):
            self.out.append(" ")

    def handle_endtag(self, tag):
        if self.skip_tag:
            if tag == self.skip_tag:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip_tag = None
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag in BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if self.skip_tag:
            return
        self.out.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self):
        lines = [l.strip() if not l.startswith("    ") else l.rstrip() for l in "".join(self.out).split("\n")]
        return "\n".join(lines)


def html_file_to_text(path):
    p = Text()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    p.close()
    return p.text()


def html_files_to_doc(job):
    name, files = job
    write(name, "\n\n".join(html_file_to_text(f) for f in files))
    return name


def html_docs(jobs):
    with concurrent.futures.ProcessPoolExecutor(JOBS) as pool:
        for _ in pool.map(html_files_to_doc, jobs):
            pass


# ---- R serialization (XDR) reader, enough for the character vectors of janeaustenr's lazy-load DB.
class RReader:
    def __init__(self, b):
        self.b, self.p, self.refs = b, 0, []
        if b[:2] != b"X\n":
            fail("R data is not in XDR serialization format")
        self.p = 2
        version = self.int(); self.int(); self.int()
        if version == 3:
            encoding_len = self.int()
            self.p += encoding_len

    def int(self):
        v = struct.unpack_from(">i", self.b, self.p)[0]
        self.p += 4
        return v

    def item(self):
        flags = self.int()
        t, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if t in (254, 253, 252, 251, 250, 242, 241):  # NULL, environments, markers
            return None
        if t == 255:  # reference
            return self.refs[(flags >> 8) - 1] if flags >> 8 else self.refs[self.int() - 1]
        if t in (249, 248, 247):  # namespace / package / persistent: a string vector
            self.int()
            v = [self.item() for _ in range(self.int())]
            self.refs.append(v)
            return v
        if t == 1:  # symbol
            v = ("sym", self.item())
            self.refs.append(v)
            return v
        if t in (2, 3, 5, 6, 17):  # pairlists and friends
            attr = self.item() if has_attr else None
            tag = self.item() if has_tag else None
            return ("pair", tag, self.item(), self.item(), attr)
        if t == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            v = self.b[self.p:self.p + n].decode("utf-8", "replace")
            self.p += n
            return v
        if t in (10, 13):
            n = self.int(); v = list(struct.unpack_from(f">{n}i", self.b, self.p)); self.p += 4 * n
        elif t == 14:
            n = self.int(); v = list(struct.unpack_from(f">{n}d", self.b, self.p)); self.p += 8 * n
        elif t in (16, 19, 20):
            v = [self.item() for _ in range(self.int())]
        else:
            fail(f"R serialization type {t} at byte {self.p} is not supported")
        attr = self.item() if has_attr else None
        return ("vec", t, v, attr)


def names_of(vec):
    attr = vec[3]
    while attr:
        if attr[1] == ("sym", "names"):
            return attr[2][2]
        attr = attr[3]
    return []


def austen():
    data = need(ROOT / "usr/lib/R/site-library/janeaustenr/data")
    index = RReader(gzip.decompress((data / "Rdata.rdx").read_bytes())).item()
    variables = index[2][names_of(index).index("variables")]
    db = (data / "Rdata.rdb").read_bytes()
    for name, where in zip(names_of(variables), variables[2]):
        offset, length = where[2]
        blob = db[offset:offset + length]
        obj = RReader(zlib.decompress(blob[4:])).item()
        if obj[1] != 16:
            fail(f"janeaustenr object '{name}' is not a character vector")
        write(name, "\n".join(l or "" for l in obj[2]))


def kjv():
    bible = need(ROOT / "usr/bin/bible")
    need(ROOT / "usr/lib/bible.data")
    out = subprocess.run([str(bible), "-p", str(ROOT / "usr/lib"), "-l1000000", "gen1:1-rev22:21"],
                         check=True, capture_output=True, stdin=subprocess.DEVNULL).stdout.decode("utf-8", "replace")
    if "Revelation 22" not in out:
        fail("the bible CLI did not print the whole KJV (no 'Revelation 22')")
    write("kjv", out)


def web():
    mod2imp = need(ROOT / "usr/bin/mod2imp")
    sword = need(ROOT / "usr/share/sword")
    env = dict(os.environ, SWORD_PATH=str(sword), HOME=str(OUT),
               LD_LIBRARY_PATH=str(ROOT / "usr/lib/x86_64-linux-gnu"))
    imp = subprocess.run([str(mod2imp), "engWEB2015eb"], check=True, capture_output=True, env=env,
                         stdin=subprocess.DEVNULL, cwd=str(sword)).stdout.decode("utf-8", "replace")
    parts, chapter = [], None
    for block in imp.split("$$$")[1:]:
        key, _, body = block.partition("\n")
        # Footnotes go; the source sometimes has no space between a note and the next word.
        body = re.sub(r"<note\b.*?</note>(?=\w)", " ", body, flags=re.S)
        body = re.sub(r"<note\b.*?</note>", "", body, flags=re.S)
        body = re.sub(r"<title\b[^>]*>(.*?)</title>", r"\n\1\n", body, flags=re.S)
        body = html.unescape(re.sub(r"<[^>]+>", "", body))
        body = re.sub(r"[ \t]+", " ", body).strip()
        m = re.match(r"(.+) (\d+):(\d+)$", key.strip())
        if not m or not body:
            continue
        book, ch, verse = m.group(1), int(m.group(2)), int(m.group(3))
        if ch and (book, ch) != chapter:
            chapter = (book, ch)
            parts.append(f"\n{book} {ch}\n")
        parts.append(f"{verse} {body}" if verse else body)
    if len(parts) < 30000:
        fail(f"mod2imp gave only {len(parts)} verses")
    write("web", "\n".join(parts))


def jargon():
    write("jargon", gzip.decompress(need(ROOT / "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes())
          .decode("utf-8", "replace"))


def sorted_html(d):
    return sorted(p for p in d.rglob("*.html") if p.is_file())


def linux():
    base = need(ROOT / "usr/share/doc/linux-doc-6.1/html")
    jobs = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if d.name.startswith("_") or d.name == "translations":
            continue
        files = sorted_html(d)
        if files:
            jobs.append((d.name, files))
    html_docs(jobs)


def python():
    base = need(ROOT / "usr/share/doc/python3.11/html")
    jobs = [(d.name, sorted_html(d)) for d in sorted(p for p in base.iterdir() if p.is_dir())
            if not d.name.startswith("_") and sorted_html(d)]
    html_docs(jobs)


def pod_to_text(src):
    out, skipping = [], False
    for para in re.split(r"\n\s*\n", src):
        if para.startswith("="):
            cmd, _, rest = para[1:].partition(" ") if " " in para.split("\n")[0] else (para[1:].split("\n")[0], "", "")
            cmd = cmd.strip()
            if cmd == "begin":
                skipping = rest.strip().split()[0:1] not in (["text"],)
                continue
            if cmd == "end":
                skipping = False
                continue
            if skipping or cmd in ("pod", "cut", "over", "back", "encoding", "for"):
                continue
            para = rest
        if skipping:
            continue
        if not para[:1].isspace():  # verbatim paragraphs (indented) keep their formatting codes
            for _ in range(8):
                new = re.sub(r"([A-Z])<<+\s+(.*?)\s+>>+", lambda m: code(m.group(1), m.group(2)), para, flags=re.S)
                new = re.sub(r"([A-Z])<([^<>]*)>", lambda m: code(m.group(1), m.group(2)), new)
                if new == para:
                    break
                para = new
        out.append(para)
    return "\n\n".join(out)


def code(kind, body):
    if kind in "XZ":
        return ""
    if kind == "E":
        return {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}.get(body) or html.unescape(f"&{body};") \
            if not body.isdigit() else chr(int(body))
    if kind == "L":
        text, bar, _ = body.partition("|")
        if bar:
            return text
        return body.replace('"', "").replace("/", " ").strip()
    return body


def perl():
    base = need(ROOT / "usr/share/perl/5.36.0/pod")
    for f in sorted(base.glob("*.pod")):
        write(f.stem, pod_to_text(f.read_text(encoding="utf-8", errors="replace")))


def rust():
    base = need(ROOT / "usr/share/doc/rust-doc/html")
    jobs = []
    for f in sorted(base.rglob("print.html")):
        name = str(f.parent.relative_to(base)).replace("/", "-")
        if name.startswith("book-") and name.endswith("edition"):
            continue  # stubs that point to the current book
        if name == "rust-by-example-hello":
            continue  # a stray copy of one chapter
        jobs.append((name, [f]))
    html_docs(jobs)


def postgresql():
    base = need(ROOT / "usr/share/doc/postgresql-doc-15/html")
    groups = {}
    for f in sorted(base.glob("*.html")):
        groups.setdefault(re.split(r"[-.]", f.name)[0], []).append(f)
    jobs = []
    small = []
    for prefix, files in sorted(groups.items()):
        if len(files) >= 3:
            jobs.append((prefix, files))
        else:
            small.extend(files)
    jobs.append(("misc", small))
    html_docs(jobs)


def debian_reference():
    base = need(ROOT / "usr/share/debian-reference")
    html_docs([(f.name.split(".")[0], [f]) for f in sorted(base.glob("*.en.html")) if not f.name.startswith("index")])


{"austen": austen, "kjv": kjv, "web": web, "jargon": jargon, "linux": linux, "python": python,
 "perl": perl, "rust": rust, "postgresql": postgresql, "debian-reference": debian_reference}[SOURCE]()
if not any(OUT.glob("*.txt")):
    fail(f"no documents written to {OUT}")
PY

for s in "${todo[@]}"; do
  echo "get-corpus: building $s" >&2
  rm -rf "$corpus/.$s.tmp"
  mkdir -p "$corpus/.$s.tmp"
  "$python" "$debs/extract.py" "$s" "$debs/root" "$corpus/.$s.tmp"
  stamp_of "$s" > "$corpus/.$s.tmp/.stamp"
  rm -rf "$corpus/$s"
  mv "$corpus/.$s.tmp" "$corpus/$s"
done

"$python" - "$corpus" "${sources[@]}" <<'PY'
import pathlib, sys
root = pathlib.Path(sys.argv[1])
total_docs = total_bytes = 0
for s in sys.argv[2:]:
    files = sorted((root / s).glob("*.txt"))
    size = sum(f.stat().st_size for f in files)
    total_docs += len(files); total_bytes += size
    print(f"get-corpus: {s:18s} {len(files):4d} documents {size / 1e6:8.2f} MB", file=sys.stderr)
print(f"get-corpus: {'total':18s} {total_docs:4d} documents {total_bytes / 1e6:8.2f} MB", file=sys.stderr)
PY
echo "$corpus"
