"""Comparison tables and plots from BenchResult files: a static HTML page or Markdown.

EvalResult files (edgekit eval -o) may be passed alongside: a file is told by its content (an eval
result has "kind": "eval"), and folders are searched for both result.json and eval.json. Then the
table gains a quality column pair, "PPL" and "KL mean", filled for each bench row from the eval
result of the same artifact sha256 (one with a KL block first, then the newest), and a "Quality"
table lists every eval result (also those with no bench result of their file)."""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from pathlib import Path

from edgekit.atomic import atomic_file
from edgekit.errors import EdgekitError
from edgekit.formats import FORMATS, get_format
from edgekit.results import BenchResult, EvalResult
from edgekit.runtimes import LLAMA_CPP, RUNTIMES
from edgekit.terminal import printable

COLUMNS = ["artifact", "runtime", "target", "pp tok/s", "tg tok/s", "TTFT s", "peak mem", "W (tg)",
           "J/token (tg)", "roofline %"]
QUALITY_COLUMNS = ["PPL", "KL mean"]   # added to COLUMNS when eval results are given
EVAL_COLUMNS = ["artifact", "runtime", "text", "chunks x ctx", "PPL", "reference", "KL mean", "KL p99", "same top",
                "mean Δp"]


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _pm(stat, spec=".1f") -> str:
    return "-" if stat is None else f"{stat.mean:{spec}} ± {stat.stdev:{spec}}"


def artifact_name(fmt: str, path: Path) -> str:
    """How tables name an artifact file: its name, with its folder where the format names every
    file alike (every ONNX export is model.onnx)."""
    return f"{path.parent.name}/{path.name}" if fmt in FORMATS and get_format(fmt).one_model_per_folder else path.name


def clean(cells: list) -> list[str]:
    """Each cell as one printable line (edgekit.terminal.printable): a result's text may come from a
    device, which may say anything (escape codes, bidi overrides). Every table below is made of
    cleaned cells, so Markdown, HTML and the terminal show the same, harmless text; the renderers
    add only their own escaping (`|`, HTML entities, rich markup)."""
    return [printable(c, 300) for c in cells]


def label(r: BenchResult) -> str:
    path = Path(r.artifact.path)
    name = artifact_name(r.artifact.format, path)
    return printable(name if r.artifact.quant is None or r.artifact.quant in name else f"{name} ({r.artifact.quant})",
                     200)


def columns(evals: list[EvalResult] | None = None) -> list[str]:
    return COLUMNS + (QUALITY_COLUMNS if evals else [])


def quality_of(r: BenchResult, evals: list[EvalResult]) -> EvalResult | None:
    """The eval result of the same file as bench result `r` (by sha256): one against a reference first,
    then the newest."""
    same = [e for e in evals if r.artifact.sha256 and e.artifact.sha256 == r.artifact.sha256]
    return max(same, key=lambda e: (e.kl is not None, e.created_utc), default=None)


def _quality_cells(e: EvalResult | None) -> list[str]:
    if e is None:
        return ["-", "-"]
    return [f"{e.perplexity:.3f}", _fmt(e.kl.kl_divergence.mean if e.kl else None, ".5f")]


def rows(results: list[BenchResult], evals: list[EvalResult] | None = None) -> list[list[str]]:
    out = []
    for r in results:
        m, p = r.metrics, r.power
        mem = m.peak_rss_bytes + (m.peak_gpu_mem_bytes or 0)
        out.append(clean([
            label(r), f"{r.runtime.name} {r.runtime.backend}", r.target,
            _pm(m.pp_tok_s), _pm(m.tg_tok_s), _fmt(m.ttft_s.mean if m.ttft_s else None, ".3f"),
            f"{mem / 2**20:.0f} MiB", _fmt(p.tg_avg_w, ".1f"), _fmt(p.tg_j_per_tok, ".3f"),
            _fmt(r.roofline.efficiency * 100 if r.roofline and r.roofline.efficiency else None, ".0f"),
            *(_quality_cells(quality_of(r, evals)) if evals else []),
        ]))
    return out


def eval_label(e: EvalResult) -> str:
    path = Path(e.artifact.path)
    name = artifact_name(e.artifact.format, path)
    return printable(name if e.artifact.quant is None or e.artifact.quant in name else f"{name} ({e.artifact.quant})",
                     200)


def eval_rows(evals: list[EvalResult]) -> list[list[str]]:
    out = []
    for e in evals:
        kl = e.kl
        out.append(clean([
            eval_label(e), f"{e.runtime.name} {e.runtime.backend}", Path(e.text.name).name, f"{e.chunks} x {e.ctx}",
            f"{e.perplexity:.3f} ± {e.perplexity_stderr:.3f}",
            f"{Path(kl.reference.path).name} ({kl.reference.quant or kl.reference.format})" if kl else "-",
            _fmt(kl.kl_divergence.mean if kl else None, ".5f"), _fmt(kl.kl_divergence.p99 if kl else None, ".5f"),
            _fmt(kl.same_top_rate * 100 if kl else None, ".1f") + ("%" if kl else ""),
            _fmt(kl.delta_p_mean * 100 if kl else None, "+.3f") + ("%" if kl else ""),
        ]))
    return out


def power_mode(r: BenchResult) -> str:
    """The power mode the run had: Jetson nvpmodel, macOS Low Power Mode, the Linux governor."""
    after = (r.target_state or {}).get("after") or {}
    nv = after.get("nvpmodel")
    if isinstance(nv, dict) and nv.get("mode"):
        return str(nv["mode"])
    settings = after.get("power_settings")
    if isinstance(settings, dict) and ("lowpowermode" in settings or "powermode" in settings):
        return "low power" if "1" in (settings.get("lowpowermode"), settings.get("powermode")) else "normal"
    if after.get("governor"):
        return f"governor {after['governor']}"
    return "-"


def clocks_locked(r: BenchResult) -> str:
    states = [(r.target_state or {}).get(k) or {} for k in ("before", "after")]
    locks = [s["jetson_clocks"].get("locked") for s in states if isinstance(s.get("jetson_clocks"), dict)]
    if locks and all(v is not None for v in locks):
        return "yes" if all(locks) else "no"
    governors = [s.get("governor") for s in states if s.get("governor")]
    if governors:
        return "yes (performance)" if all(g == "performance" for g in governors) else "no (DVFS)"
    return "-"


def throttled(r: BenchResult) -> str:
    words = ("throttl", "limited the CPU", "Low Power Mode", "hot after")
    hits = [w for w in r.warnings if any(x in w for x in words)]
    return "yes" if hits else "no" if (r.target_state or {}).get("after") else "-"


def device_name(r: BenchResult) -> str:
    """The device a result ran on: the SSH destination it was reached through (bench --host), else
    its hostname; with its target and RAM."""
    h = r.host
    ram = f", {h.ram_bytes / 2**30:.0f} GiB" if h.ram_bytes else ""
    return printable(f"{h.reached_as or h.hostname or '?'} ({r.target}{ram})", 200)


REPRO_COLUMNS = ["device", "OS", "power mode", "clocks locked", "throttled", "runtime", "build", "edgekit"]


def reproducibility_rows(results: list[BenchResult]) -> list[list[str]]:
    """Per result, what makes its device number reproducible: the device (name, target, RAM), its
    OS (L4T release on a Jetson), power mode, whether clocks were locked, throttling, the runtime's
    version and build, edgekit's version."""
    out = []
    for r in results:
        detected = (r.target_state or {}).get("detected") or {}
        os_text = r.host.os or "-"
        if detected.get("l4t"):
            os_text += f", L4T {detected['l4t']}"
        build = r.runtime.build_flags or "-"
        runtime = RUNTIMES.get(r.runtime.name)
        if runtime and runtime.build_describer and "=" in build:  # e.g. llama_print_system_info: its features
            build = runtime.hook("build_describer")(build) or build
        if r.runtime.build_commit:
            build = f"{build} @{r.runtime.build_commit}"
        out.append(clean([device_name(r), os_text, power_mode(r), clocks_locked(r), throttled(r),
                          f"{r.runtime.name} {r.runtime.version} {r.runtime.backend}", build[:120], r.tool.version]))
    return out


def by_device(results: list[BenchResult]) -> list[BenchResult]:
    """The results grouped by device (stable within a device)."""
    order: dict[str, int] = {}
    for r in results:
        order.setdefault(device_name(r), len(order))
    return sorted(results, key=lambda r: order[device_name(r)])


def result_files(paths: list[Path]) -> list[Path]:
    """Result files named, and every result.json and eval.json under folders named (edgekit bench --host
    writes results/<host>/<artifact>/<time>/result.json; name an edgekit eval -o file eval.json there), in
    a stable order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted([*p.rglob("result.json"), *p.rglob("eval.json")])
            if not found:
                raise EdgekitError(f"{p} holds no result.json or eval.json", "pass result files, or a folder edgekit "
                                   "bench --host wrote (results/)")
            out += found
        else:
            out.append(p)
    for p in out:  # a pipe or a device named result.json would hang the read
        if p.exists() and not p.is_file():
            raise EdgekitError(f"{p} is not a regular file", "pass result files written by edgekit bench or eval")
    return out


def load_results(paths: list[Path]) -> tuple[list[BenchResult], list[EvalResult]]:
    """Each file as a BenchResult, or as an EvalResult when its content says "kind": "eval"."""
    bench, evals = [], []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None  # BenchResult.load says what is wrong with it
        if EvalResult.is_eval(data):
            evals.append(EvalResult.load(p))
        else:
            bench.append(BenchResult.load(p))
    return bench, evals


def plots(results: list[BenchResult]) -> dict[str, bytes]:
    """PNG images: tg tok/s and J/token per artifact/target, and pp vs tg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{label(r)}\n{r.target}" for r in results]
    images = {}

    def png(fig) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        return buf.getvalue()

    tg = [r.metrics.tg_tok_s for r in results]
    if any(tg):
        fig, ax = plt.subplots(figsize=(max(5.5, 2.2 * len(results)), 4.2))
        ax.bar(range(len(results)), [s.mean if s else 0 for s in tg], yerr=[s.stdev if s else 0 for s in tg],
               color="#3a7ca5", capsize=4)
        bounds = [r.roofline.tg_bound_tok_s if r.roofline else None for r in results]
        for i, b in enumerate(bounds):
            if b:
                ax.plot([i - 0.4, i + 0.4], [b, b], color="#d1495b", lw=2, label="roofline bound" if i == 0 else None)
        ax.set_xticks(range(len(results)), names, fontsize=8, rotation=20, ha="right")
        ax.set_ylabel("generation (tok/s)")
        ax.set_title("Token generation speed")
        if any(bounds):
            ax.legend(fontsize=8)
        images["tg"] = png(fig)
    jpt = [r.power.tg_j_per_tok for r in results]
    if any(j is not None for j in jpt):
        fig, ax = plt.subplots(figsize=(max(5.5, 2.2 * len(results)), 4.2))
        ax.bar(range(len(results)), [j or 0 for j in jpt], color="#edae49")
        ax.set_xticks(range(len(results)), names, fontsize=8, rotation=20, ha="right")
        ax.set_ylabel("J / generated token")
        ax.set_title("Energy per token (generation)")
        images["energy"] = png(fig)
    pts = [(r.metrics.pp_tok_s.mean, r.metrics.tg_tok_s.mean, label(r)) for r in results
           if r.metrics.pp_tok_s and r.metrics.tg_tok_s]
    if pts:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for pp, tg_, name in pts:
            ax.scatter(pp, tg_, s=40)
            ax.annotate(name, (pp, tg_), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("prompt processing (tok/s)")
        ax.set_ylabel("generation (tok/s)")
        ax.set_title("Prompt vs generation speed")
        images["pp_vs_tg"] = png(fig)
    return images


def settings_line(results: list[BenchResult]) -> str:
    s = {(r.settings.n_prompt, r.settings.n_gen, r.settings.repetitions, r.settings.threads) for r in results}
    return "; ".join(f"pp{p} tg{n}, {rep} repetitions, {t} threads" for p, n, rep, t in sorted(s))


def _devices_differ(results: list[BenchResult]) -> bool:
    """More than one device: the report then says what each number ran on."""
    return len({device_name(r) for r in results}) > 1


def to_markdown(results: list[BenchResult], evals: list[EvalResult] | None = None, with_plan: bool = False) -> str:
    results = by_device(results)
    lines = ["# edgekit benchmark report"]
    if results:
        cols = columns(evals)
        lines += ["", f"Settings: {settings_line(results)}.", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += [_md_row(row) for row in rows(results, evals)]
    if evals:
        lines += ["", "## Quality", "", "Perplexity as llama-perplexity computes it (the second half of each chunk "
                  "scored); KL(reference || artifact) in nats.", "",
                  "| " + " | ".join(EVAL_COLUMNS) + " |", "|" + "---|" * len(EVAL_COLUMNS)]
        lines += [_md_row(row) for row in eval_rows(evals)]
    if _devices_differ(results):
        lines += ["", "## What each number ran on", "", "| artifact | " + " | ".join(REPRO_COLUMNS) + " |",
                  "|" + "---|" * (len(REPRO_COLUMNS) + 1)]
        lines += [_md_row([label(r), *row]) for r, row in zip(results, reproducibility_rows(results))]
    if with_plan:
        lines += ["", "## Plan vs measured", "", "tg predicted = efficiency x the run's bandwidth / its bytes read per "
                  "token (edgekit plan's model), the efficiency fitted on the other results.", "",
                  "| " + " | ".join(PLAN_COLUMNS) + " |", "|" + "---|" * len(PLAN_COLUMNS)]
        lines += [_md_row(row) for row in predicted_vs_measured(results)]
    notes = _notes(results)
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    """A Markdown table row of cleaned cells: a `|` in a cell would start a new column."""
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _notes(results: list[BenchResult]) -> list[str]:
    """One line per distinct note, naming the results it applies to."""
    by_text: dict[str, list[str]] = {}
    for r in results:
        texts = [f"no power figure: {r.power.unavailable}" if r.power.source is None else
                 f"power from {r.power.source}; it does not see: {r.power.excludes}", *r.warnings]
        for text in texts:
            by_text.setdefault(text, []).append(label(r))
    return clean([f"{text} ({'all results' if len(names) == len(results) > 1 else ', '.join(names)})"
                  for text, names in by_text.items()])


def to_html(results: list[BenchResult], evals: list[EvalResult] | None = None, with_plan: bool = False) -> str:
    results = by_device(results)
    imgs = plots(results) if results else {}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns(evals))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows(results, evals))
    table = (f"<p>Settings: {html.escape(settings_line(results))}. Mean ± sample standard deviation over "
             "repetitions;\nrandom prompt tokens (speed does not depend on token values).</p>\n"
             f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>') if results else ""
    figures = "".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}"></figure>'
        for k, v in imgs.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in _notes(results))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgekit benchmark report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f0f0f0; }}
td:first-child, td:nth-child(2), td:nth-child(3), th:first-child, th:nth-child(2), th:nth-child(3) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em 1em 0 0; }}
</style></head><body>
<h1>edgekit benchmark report</h1>
{table}
{_quality_html(evals or [])}
{_repro_html(results)}
{_plan_html(results) if with_plan else ""}
{figures}
<ul>{notes}</ul>
</body></html>
"""


def _quality_html(evals: list[EvalResult]) -> str:
    if not evals:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in EVAL_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in eval_rows(evals))
    return ('<h2>Quality</h2><p>Perplexity as llama-perplexity computes it (the second half of each chunk scored); '
            f'KL(reference || artifact) in nats.</p><table id="quality"><thead><tr>{head}</tr></thead><tbody>{body}'
            '</tbody></table>')


def _repro_html(results: list[BenchResult]) -> str:
    if not _devices_differ(results):
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["artifact", *REPRO_COLUMNS])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in [label(r), *row]) + "</tr>"
                   for r, row in zip(results, reproducibility_rows(results)))
    return f'<h2>What each number ran on</h2><table id="devices"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _plan_html(results: list[BenchResult]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in PLAN_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in predicted_vs_measured(results))
    return f'<h2>Plan vs measured</h2><table id="plan"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_report(result_paths: list[Path], out: Path, with_plan: bool = False) -> Path:
    if not result_paths:
        raise EdgekitError("no result files given", "pass one or more JSON files written by edgekit bench -o")
    results, evals = load_results(result_files(result_paths))
    out = Path(out)
    if out.suffix.lower() in (".html", ".htm"):
        text = to_html(results, evals, with_plan)
    elif out.suffix.lower() == ".md":
        text = to_markdown(results, evals, with_plan)
    else:
        raise EdgekitError(f"unknown report type '{out.suffix or out.name}'", "name the output report.html or report.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


# ---------------------------------------------------------------- plan vs measured (report --plan)


PLAN_COLUMNS = ["artifact", "target", "runtime", "tg measured", "tg predicted", "error", "efficiency from"]


def predicted_vs_measured(results: list) -> list[list[str]]:
    """Per bench result with a roofline: the tg plan predicts for it (its own bytes per token and
    bandwidth, the efficiency of the *other* results of the same target x runtime, median; the
    default when there are none) beside what it measured. Rows for `edgekit report --plan`."""
    out = []
    for r in results:
        if not (r.roofline and r.metrics.tg_tok_s and r.roofline.bandwidth_gb_s):
            continue
        others = [o.roofline.efficiency for o in results if o is not r and o.target == r.target
                  and o.runtime.name == r.runtime.name and o.roofline and o.roofline.efficiency]
        runtime = RUNTIMES.get(r.runtime.name, LLAMA_CPP)
        eff = statistics.median(others) if others else runtime.plan_efficiency
        source = f"median of {len(others)} other result(s)" if others else f"default {eff:g}"
        predicted = eff * r.roofline.bandwidth_gb_s * 1e9 / r.roofline.bytes_per_token
        measured = r.metrics.tg_tok_s.mean
        out.append(clean([label(r), r.target, r.runtime.name, f"{measured:.1f}", f"{predicted:.1f}",
                          f"{(predicted / measured - 1) * 100:+.0f}%", source]))
    return out
