"""Turns `strace -f -tt -xx -s 65535` lines of one socket fd into segment lines:
`S|R <ns since the first> <hex of the bytes>` (S: the traced process sent).
Usage: python3 strace2seg.py TRACE FD (events before a connect() on FD are dropped)"""
import re, sys

CALLS = r'(read|write|writev|readv|sendmsg|recvmsg|sendto|recvfrom)'
fd = sys.argv[2]
pending = {}
out = []
for line in open(sys.argv[1]):
    line = line.rstrip('\n')
    m = re.match(r'^(\d+) (\d+):(\d+):(\d+)\.(\d+) (.*)$', line)
    if not m:
        continue
    pid, h, mi, s, us, rest = m.groups()
    ns = ((int(h) * 60 + int(mi)) * 60 + int(s)) * 10**9 + int(us) * 1000
    if rest.endswith('<unfinished ...>'):
        pending[pid] = rest[: -len('<unfinished ...>')]
        continue
    r = re.match(r'^<\.\.\. \w+ resumed>(.*)$', rest)
    if r:
        rest = pending.pop(pid, '') + r.group(1)
    if re.match(r'^connect\(' + fd + r',', rest):
        out = []  # the fd was something else before: keep this connection only
        continue
    c = re.match(r'^' + CALLS + r'\(' + fd + r', (.*) = (-?\d+)', rest)
    if not c or int(c.group(3)) <= 0:
        continue
    call, args, ret = c.groups()
    strings = re.findall(r'"((?:\\x[0-9a-f]{2})*)"', args)
    data = b''.join(bytes.fromhex(x.replace('\\x', '')) for x in strings)[: int(ret)]
    out.append(('R' if call.startswith(('read', 'recv')) else 'S', ns, data))
base = out[0][1] if out else 0
for d, ns, data in out:
    print(d, ns - base + 1_000_000, data.hex())
