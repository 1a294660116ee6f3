# Checks ?around= against the window route at the top, middle and bottom of
# a populated board, and times the around reads.
import json, sys, time, urllib.request
base = sys.argv[1]
def get(path):
    t = time.perf_counter()
    with urllib.request.urlopen(base + path) as r:
        body = json.load(r)
    return body, time.perf_counter() - t
players = None
# find the board size via a binary search on the window route
lo, hi = 0, 1 << 22
while lo < hi:
    mid = (lo + hi) // 2
    page, _ = get(f"/leaderboards/exrps?offset={mid}&count=1")
    if page: lo = mid + 1
    else: hi = mid
players = lo
print("players on the board:", players)
for rank in [1, 2, players // 2, players - 1, players]:
    entry, _ = get(f"/leaderboards/exrps?offset={rank-1}&count=1")
    user = entry[0]["user_id"]
    for n in [0, 50]:
        body, took = get(f"/leaderboards/exrps/players/{user}?around={n}")
        start = max(rank - 1 - n, 0)
        need = min(rank + n, players) - start
        window = []
        while len(window) < need:
            part, _ = get(f"/leaderboards/exrps?offset={start + len(window)}&count={min(100, need - len(window))}")
            window += part
        want = [dict(e, rank=start + i + 1) for i, e in enumerate(window)]
        ok = body["rank"] == rank and body["around"] == want
        print(f"rank {rank:>8} around={n:>2}: {len(body['around'])} entries, {took*1000:.2f} ms, matches window: {ok}")
        if not ok:
            sys.exit(1)
times = []
for i in range(300):
    rank = 1 + (i * 7919) % players
    entry, _ = get(f"/leaderboards/exrps?offset={rank-1}&count=1")
    _, took = get(f"/leaderboards/exrps/players/{entry[0]['user_id']}?around=50")
    times.append(took)
times.sort()
print(f"around=50 at 300 spread ranks, one at a time: p50 {times[150]*1000:.2f} ms, p99 {times[296]*1000:.2f} ms, max {times[-1]*1000:.2f} ms")
