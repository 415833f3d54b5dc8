"""camclassd beside the loops a user would write, in one run, on one machine (issue 17's method).

side_by_side.py CAMCLASSD MODEL IMAGE SECONDS PEER_PYTHON

Measures, each for SECONDS after a warm-up:
  - the inference floor: a bare session.run loop, 1 and 2 intra-op threads;
  - JPEG decode alone (cv2.imdecode, libjpeg-turbo), for the "floor + decode" a native pipeline costs;
  - the peers: Python + OpenCV (1 and 2 threads) and Python + Pillow (2 threads) loops;
  - `camclassd run` at full load (3 replay cameras offering 120 fps each, every_frame events), with its
    defaults (`workers` chosen from the load) and with fixed parallelism;
  - one camera at 1, 5 and 15 fps: camclassd beside the floor, the decode and the OpenCV loop paced the same
    way (a paced loop costs more per frame than a flat-out one: caches go cold and threads wake between frames).
Prints frames/s, CPU ms per frame (process CPU over frames classified), peak RSS, and the ratios issue 29
asks for: full load against the two-core bound (cores / (1-thread inference + decode CPU ms per frame), both
measured here) and the 2-thread OpenCV loop; a camera's pace against the paced floor + decode.
CPU time is read from /proc/PID/stat after the warm-up, so model loading and the model check are not counted.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

camclassd, model, image, seconds, peer_python = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
here = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
WARM_UP = 4.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def peer(mode: str, threads: int, fps: float = 0.0) -> dict:
    out = subprocess.run(
        [peer_python, f"{here}/peer_loops.py", mode, image, model, str(seconds), str(threads), str(fps)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def daemon(work: str, port: int, cameras: int, fps: float, label: str, model_keys: str = "") -> dict:
    frames = os.path.join(work, "frames")
    os.makedirs(frames, exist_ok=True)
    for i in range(20):
        shutil.copy(image, os.path.join(frames, f"{i:02}.jpg"))
    conf = os.path.join(work, f"{label}.toml")
    with open(conf, "w") as f:
        f.write(f'version = 1\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\nnode_id = "{label}"\n')
        f.write(f'[queue]\npath = "{work}/{label}.redb"\n[model]\npath = "{os.path.abspath(model)}"\n{model_keys}')
        for c in range(cameras):
            f.write(f'[[cameras]]\nname = "c{c}"\nsource = "{frames}"\nfps = {fps}\npublish = "every_frame"\n')
    events = os.path.join(work, f"{label}.events")
    sub = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-t", f"camclassd/{label}/+/event"],
                           stdout=open(events, "wb"))
    time.sleep(0.3)
    proc = subprocess.Popen([camclassd, "--log-level", "info", "run", "--config", conf], stderr=open(f"{work}/{label}.log", "wb"))
    peak = 0.0
    try:
        deadline = time.time() + 60
        while lines(events) == 0:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"camclassd published nothing; see {work}/{label}.log")
            time.sleep(0.1)
        time.sleep(WARM_UP)
        c0, n0, t0 = cpu_seconds(proc.pid), lines(events), time.perf_counter()
        time.sleep(seconds)
        c1, n1, t1 = cpu_seconds(proc.pid), lines(events), time.perf_counter()
        peak = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
        sub.terminate()
    n = max(n1 - n0, 1)
    what = f"camclassd run, {cameras} camera{'s' if cameras > 1 else ''} at {fps:g} fps"
    if model_keys:
        what += ", " + model_keys.strip().replace("\n", ", ")
    changes = [l.split("parallelism ", 1)[1].split(":")[0] for l in open(f"{work}/{label}.log", errors="replace")
               if "parallelism " in l]
    if changes:
        what += f" [{', '.join(changes)}]"
    return {"what": what, "frames": n1 - n0, "frames_per_s": n / (t1 - t0),
            "cpu_ms_per_frame": 1e3 * (c1 - c0) / n, "cpu_pct": 100 * (c1 - c0) / (t1 - t0), "peak_rss_mib": peak}


def show(r: dict) -> dict:
    print(f"  {r['what']:<44} {r['frames_per_s']:>8.1f} {r['cpu_ms_per_frame']:>10.2f} {r['cpu_pct']:>7.0f} "
          f"{r.get('peak_rss_mib', float('nan')):>9.1f}", flush=True)
    return r


work = tempfile.mkdtemp(prefix="camclassd-sbs-")
port = free_port()
with open(f"{work}/mosquitto.conf", "w") as f:
    f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
broker = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", f"{work}/mosquitto.conf"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
try:
    print(f"{os.path.basename(model)}, {os.path.basename(image)}, {os.cpu_count()} cores, {seconds:g} s each")
    print(f"  {'what':<44} {'frames/s':>8} {'CPU ms/fr':>10} {'CPU %':>7} {'peak MiB':>9}")
    floor1 = show(peer("bare", 1))
    floor2 = show(peer("bare", 2))
    decode = show(peer("decode", 1))
    show(peer("opencv", 1))
    cv2 = show(peer("opencv", 2))
    pil = show(peer("pil", 2))
    full = show(daemon(work, port, 3, 120, "full"))
    # Issue 17 goal 2: the same load with the three cameras' frames batched (1 and 2 intra-op threads),
    # unbatched with 2 threads, so that the batch's share and the second thread's can be told apart, and
    # with two workers of one thread each (both cores on inference, each worker decoding its own frames).
    batched = [
        show(daemon(work, port, 3, 120, f"batched{b}x{t}x{w}", f"max_batch = {b}\nthreads = {t}\nworkers = {w}\n"))
        # (1, 0, 1): the default before workers followed the load (one worker, the cores minus one threads).
        for b, t, w in ((1, 0, 1), (1, 2, 1), (4, 1, 1), (4, 2, 1), (1, 1, 2))
    ]
    paced = {}
    for fps in (1, 5, 15):
        paced[fps] = (
            show(daemon(work, port, 1, fps, f"paced{fps}")),
            show(peer("bare", 1, fps)),
            show(peer("decode", 1, fps)),
            show(peer("opencv", 1, fps)),
            show(peer("opencv", 2, fps)),
        )
finally:
    broker.terminate()

cores = len(os.sched_getaffinity(0))
bound = cores * 1e3 / (floor1["cpu_ms_per_frame"] + decode["cpu_ms_per_frame"])
print("ratios")
print(f"  full load, defaults: camclassd {full['frames_per_s']:.1f} frames/s = {full['frames_per_s'] / bound:.2f}x the "
      f"{cores}-core bound ({cores} / ({floor1['cpu_ms_per_frame']:.2f} + {decode['cpu_ms_per_frame']:.2f}) ms = "
      f"{bound:.1f} frames/s; goal >= 0.9x), {full['frames_per_s'] / cv2['frames_per_s']:.2f}x the 2-thread OpenCV "
      f"loop (goal >= 1.3x)")
print(f"  full load: camclassd {full['frames_per_s']:.1f} frames/s = {full['frames_per_s'] / cv2['frames_per_s']:.2f}x the "
      f"OpenCV loop (2 threads), {full['frames_per_s'] / pil['frames_per_s']:.2f}x the Pillow loop, "
      f"{full['frames_per_s'] / floor2['frames_per_s']:.2f}x the bare 2-thread floor")
for b in batched:
    print(f"  {b['what']}: {b['frames_per_s']:.1f} frames/s = {b['frames_per_s'] / full['frames_per_s']:.2f}x unbatched, "
          f"{b['frames_per_s'] / floor2['frames_per_s']:.2f}x the bare batch-1 2-thread floor (goal >= 1.3x), "
          f"{b['cpu_ms_per_frame']:.2f} CPU ms per frame against {full['cpu_ms_per_frame']:.2f}")
print("  at a camera's pace, against the floor (bare 1-thread session.run) + JPEG decode paced the same way:")
for fps, (ours, bare, dec, cv1, cv2p) in paced.items():
    native = bare["cpu_ms_per_frame"] + dec["cpu_ms_per_frame"]
    print(f"    {fps:>2} fps: camclassd {ours['cpu_ms_per_frame']:.2f} ms = {ours['cpu_ms_per_frame'] / native:.2f}x of "
          f"{native:.2f} ms (goal <= 1.1x), peak RSS {ours['peak_rss_mib']:.1f} MiB (goal <= 64 MiB); OpenCV loop 1 thread {cv1['cpu_ms_per_frame']:.2f} ms "
          f"({cv1['cpu_ms_per_frame'] / native:.2f}x), 2 threads {cv2p['cpu_ms_per_frame']:.2f} ms")
shutil.rmtree(work, ignore_errors=True)
