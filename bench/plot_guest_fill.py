# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plot the real-guest runs of the test bed: LV size, guest allocation, write rate and pauses over time.

Input: the records verify_guest.yml keeps (build/logs/guest-fill-RUN.json, written by
extensions/molecule/default/files/guest_fill.py on host 1). Output: one PNG per run next to them
(guest-fill-RUN.png), and a line of figures per run on stdout: pauses, the longest, resume after
space, write rate, and the LV's lead over the guest (LV size - allocation) at its smallest while
the LV was below its final size.

    make molecule-part PART=guest            # the runs (test bed up)
    .venv/bin/pip install matplotlib         # once; not a test requirement
    .venv/bin/python bench/plot_guest_fill.py [build/logs/guest-fill-*.json]
"""
import glob
import json
import os
import sys

MIB = 1048576.0


def figures(record):
    samples = record["samples"]
    sizes = samples["lv_size"]
    allocation = [(t, a) for t, a in samples["allocation"] if a is not None]
    lead = []
    for t, used in allocation:
        size = max([s for ts, s in sizes if ts <= t] or [0])
        lead.append((t, (size - used) / MIB, size < record["lv_bytes"]))
    pauses = record["pauses"]
    return {
        "run": os.path.basename(record.get("_path", "?")),
        "pauses": len(pauses),
        "longest_pause_s": max([p["seconds"] or 0 for p in pauses] or [0]),
        "resume_after_space_s": max([p["resumed_after_space"] or 0 for p in pauses] or [0]),
        "write_mib_per_s": record["write_mib_per_s"],
        "write_seconds": record["write_seconds"],
        # the margin while the LV could still grow (at the cap, the lead is only the cap's 10 %)
        "min_lead_mib": min([round(value, 1) for _t, value, growing in lead if growing] or [None]),
        "lv_mib": round((record["lv_bytes"] or 0) / MIB, 1),
        "lead": lead,
        "allocation": allocation,
    }


def plot(record, facts, out):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    samples = record["samples"]
    t_end = samples["t_written"]
    sizes = samples["lv_size"] + [(t_end, samples["lv_size"][-1][1])] if samples["lv_size"] else []
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.step([t for t, _s in sizes], [s / MIB for _t, s in sizes], where="post", label="LV size")
    top.plot([t for t, _a in facts["allocation"]], [a / MIB for _t, a in facts["allocation"]], label="guest allocation")
    for pause in record["pauses"]:
        top.axvspan(pause["at"], pause["at"] + (pause["seconds"] or 0.2), color="red", alpha=0.3)
    top.set_ylabel("MiB")
    top.legend(loc="upper left")
    top.set_title("%s: %d pauses, %.0f MiB/s, smallest lead %s MiB"
                  % (facts["run"], facts["pauses"], facts["write_mib_per_s"] or 0, facts["min_lead_mib"]))
    points = facts["allocation"]
    rate = [(points[i][0], (points[i][1] - points[i - 1][1]) / MIB / max(points[i][0] - points[i - 1][0], 1e-3))
            for i in range(1, len(points))]
    bottom.plot([t for t, _r in rate], [r for _t, r in rate], label="write rate (MiB/s)")
    bottom.plot([point[0] for point in facts["lead"]], [point[1] for point in facts["lead"]],
                label="LV lead over the guest (MiB)")
    for pause in record["pauses"]:
        bottom.axvspan(pause["at"], pause["at"] + (pause["seconds"] or 0.2), color="red", alpha=0.3)
    bottom.axvline(samples["t_start"], color="grey", linestyle=":")
    bottom.set_xlabel("seconds since the fill started watching (dotted: dd's first write)")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(paths):
    paths = paths or sorted(glob.glob(os.path.join("build", "logs", "guest-fill-*.json")))
    if not paths:
        sys.stderr.write("no build/logs/guest-fill-*.json: run `make molecule-part PART=guest` first\n")
        return 2
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        can_plot = True
    except ImportError:
        can_plot = False
        sys.stderr.write("matplotlib is not installed (.venv/bin/pip install matplotlib): figures only\n")
    for path in paths:
        with open(path) as handle:
            job = json.load(handle)
        record = json.loads(job["stdout"]) if "stdout" in job else job
        record["_path"] = path[:-len(".json")]
        facts = figures(record)
        print("%-32s pauses %d (longest %.2f s, resumed %.2f s after space)  %s MiB/s over %s s  "
              "LV %s MiB  smallest lead %s MiB" % (facts["run"], facts["pauses"], facts["longest_pause_s"],
                                                   facts["resume_after_space_s"], facts["write_mib_per_s"],
                                                   facts["write_seconds"], facts["lv_mib"], facts["min_lead_mib"]))
        if can_plot:
            plot(record, facts, record["_path"] + ".png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
