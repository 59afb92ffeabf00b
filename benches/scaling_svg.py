#!/usr/bin/env python3
"""Draw the scaling curve measured by benches/load.sh.

    python3 benches/scaling_svg.py SCALING_TSV OUT_DIR

SCALING_TSV has lines "target<TAB>connections<TAB>req/s<TAB>p99 µs". Writes OUT_DIR/scaling.svg
(throughput and p99 against connections, one line per target), scaling.md and scaling.json.
No plotting library: the SVG is written by hand so the script runs on a bare machine.
"""
import json
import math
import os
import sys

COLORS = {"plain-fair": "#888888", "session-many": "#1f6feb"}


def chart(series, conns, x0, title, key, log_y):
    w, h, pad = 330, 220, 55
    vals = [p[key] for pts in series.values() for p in pts]
    lo, hi = min(vals), max(vals)
    if log_y:
        lo, hi = math.floor(math.log10(max(lo, 1))), math.ceil(math.log10(max(hi, 1)))
    else:
        lo = 0
    hi = hi if hi > lo else lo + 1
    step = (w - pad - 10) / max(len(conns) - 1, 1)
    xs = {c: x0 + pad + i * step for i, c in enumerate(conns)}

    def y(v):
        v = math.log10(max(v, 1)) if log_y else v
        return 24 + (h - 48) * (1 - (v - lo) / (hi - lo))

    g = [f'<text x="{x0 + w / 2}" y="14" text-anchor="middle" font-size="12">{title}</text>',
         f'<line x1="{x0 + pad}" y1="{h - 24}" x2="{x0 + w - 10}" y2="{h - 24}" stroke="#333"/>',
         f'<line x1="{x0 + pad}" y1="24" x2="{x0 + pad}" y2="{h - 24}" stroke="#333"/>',
         f'<text x="{x0 + pad + (w - pad) / 2}" y="{h}" text-anchor="middle" font-size="10">connections</text>']
    for c in conns:
        g.append(f'<text x="{xs[c]:.1f}" y="{h - 12}" text-anchor="middle" font-size="10">{c}</text>')
    for frac in (0, 0.5, 1):
        v = lo + (hi - lo) * frac
        label = 10 ** v if log_y else v
        yy = 24 + (h - 48) * (1 - frac)
        g.append(f'<text x="{x0 + pad - 4}" y="{yy + 3:.1f}" text-anchor="end" font-size="10">{label:,.0f}</text>')
    for name, pts in series.items():
        line = " ".join(f"{xs[p['conns']]:.1f},{y(p[key]):.1f}" for p in pts)
        g.append(f'<polyline fill="none" stroke="{COLORS.get(name, "#000")}" stroke-width="2" points="{line}"/>')
        for p in pts:
            g.append(f'<circle cx="{xs[p["conns"]]:.1f}" cy="{y(p[key]):.1f}" r="2.5" fill="{COLORS.get(name, "#000")}"/>')
    return g


def main():
    tsv, out = sys.argv[1], sys.argv[2]
    series = {}
    for line in open(tsv):
        if not line.strip():
            continue
        name, c, rps, p99 = line.rstrip("\n").split("\t")
        series.setdefault(name, []).append({"conns": int(c), "rps": float(rps), "p99_us": float(p99)})
    for pts in series.values():
        pts.sort(key=lambda p: p["conns"])
    conns = sorted({p["conns"] for pts in series.values() for p in pts})
    parts = chart(series, conns, 0, "throughput (req/s)", "rps", False)
    parts += chart(series, conns, 345, "p99 latency (µs, log scale)", "p99_us", True)
    for i, name in enumerate(series):
        parts.append(f'<rect x="{60 + i * 170}" y="232" width="12" height="12" fill="{COLORS.get(name, "#000")}"/>'
                     f'<text x="{76 + i * 170}" y="242" font-size="11">{name}</text>')
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "scaling.svg"), "w") as f:
        f.write('<svg xmlns="http://www.w3.org/2000/svg" width="690" height="252" '
                'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
                + "".join(parts) + "</svg>\n")
    by = {n: {p["conns"]: p for p in pts} for n, pts in series.items()}
    md = ["| connections | " + " | ".join(f"{n} req/s | {n} p99 µs" for n in series)
          + " | session / plain (thr) |", "|---:|" + "---:|---:|" * len(series) + "---:|"]
    for c in conns:
        cells = []
        for n in series:
            cells += [f"{by[n][c]['rps']:.0f}", f"{by[n][c]['p99_us']:.0f}"]
        ratio = "-"
        if "session-many" in by and "plain-fair" in by:
            ratio = f"{by['session-many'][c]['rps'] / by['plain-fair'][c]['rps']:.3f}"
        md.append(f"| {c} | " + " | ".join(cells) + f" | {ratio} |")
    with open(os.path.join(out, "scaling.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(out, "scaling.json"), "w") as f:
        json.dump(series, f, indent=2)
    print("\n".join(md))
    print(f"wrote {out}/scaling.svg, scaling.md and scaling.json")


if __name__ == "__main__":
    main()
