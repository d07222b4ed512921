"""PyTorch's side of `cargo bench --bench speed`: the same networks and steps, timed the same
way, on the same cores. Run by hand, never in CI (PyTorch is 5 GB):

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch onnxruntime==1.32.0 onnx numpy
    /tmp/tv/bin/python benches/reference/torch_bench.py --out /tmp/torch.json
    cargo bench --bench speed -- --reference /tmp/torch.json

or `scripts/bench.sh`, which does both and prints one table. Every network is built as in the
DARTS reference code (quark0/darts): the search network of model_search.py
(mixed ops over the 8 DARTS ops, pools followed by BN(affine=False), non-affine BN in the
cells) and NetworkCIFAR of model.py with the DARTS_V2 genotype.

Each row runs in a fresh child process (`--row NAME`), on `--threads` threads (default 2),
and reports the median of `--runs` timed runs after one warm-up run, and its peak memory:
the growth of the process's resident set (VmHWM after the runs minus VmRSS once the model,
its optimizer and the inputs exist), read the same way as nas-pipe's side reads its own.
Output: one JSON object per row, {"row", "seconds", "runs", "peak_mib"}, row names as in
benches/speed.rs.
"""
import argparse, json, os, subprocess, sys, time

OPS_ORDER = ['none', 'max_pool_3x3', 'avg_pool_3x3', 'skip_connect',
             'sep_conv_3x3', 'sep_conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5']
DARTS_V2 = dict(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)])


def rows():
    """Row name -> (what it times, builder). Names match benches/speed.rs."""
    r = {
        'supernet_cell_b64': 'search step: 1 DARTS cell, C=16, 32x32, batch 64',
        'supernet_8_b16': 'search step: 8-layer search network, C=16, batch 16',
        'darts_v2_train_b64': 'retrain step: DARTS_V2, C=16, 8 layers, batch 64',
        'darts_v2_infer_b64': 'inference: DARTS_V2, C=16, 8 layers, batch 64',
        'darts_v2_c36_infer_b1': 'inference: DARTS_V2, C=36, 20 layers, batch 1',
        'ort_darts_v2_c36_b1_t1': 'ONNX Runtime: DARTS_V2 C=36 L=20, batch 1, 1 thread',
    }
    for s in (1, 2):
        for op in OPS_ORDER + ['conv_1x1', 'conv_3x3']:
            r[f'op_{op}_s{s}'] = f'op fwd+bwd: {op}, stride {s}, 64x16x32x32'
    return r


def build(row, torch, nn, F):
    class ReLUConvBN(nn.Sequential):
        def __init__(s, ci, co, k, st, p, affine=True):
            super().__init__(nn.ReLU(False), nn.Conv2d(ci, co, k, st, p, bias=False),
                             nn.BatchNorm2d(co, affine=affine))

    class DilConv(nn.Sequential):
        def __init__(s, ci, co, k, st, p, d, affine=True):
            super().__init__(nn.ReLU(False),
                             nn.Conv2d(ci, ci, k, st, p, dilation=d, groups=ci, bias=False),
                             nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co, affine=affine))

    class SepConv(nn.Sequential):
        def __init__(s, ci, co, k, st, p, affine=True):
            super().__init__(DilConv(ci, ci, k, st, p, 1, affine), DilConv(ci, co, k, 1, p, 1, affine))

    class Zero(nn.Module):
        def __init__(s, st):
            super().__init__(); s.st = st
        def forward(s, x):
            return x.mul(0.) if s.st == 1 else x[:, :, ::s.st, ::s.st].mul(0.)

    class FactorizedReduce(nn.Module):
        def __init__(s, ci, co, affine=True):
            super().__init__(); s.r = nn.ReLU(False)
            s.c1 = nn.Conv2d(ci, co // 2, 1, 2, bias=False); s.c2 = nn.Conv2d(ci, co // 2, 1, 2, bias=False)
            s.bn = nn.BatchNorm2d(co, affine=affine)
        def forward(s, x):
            x = s.r(x); return s.bn(torch.cat([s.c1(x), s.c2(x[:, :, 1:, 1:])], 1))

    OPS = {
        'none': lambda C, st, a: Zero(st),
        'max_pool_3x3': lambda C, st, a: nn.MaxPool2d(3, st, 1),
        'avg_pool_3x3': lambda C, st, a: nn.AvgPool2d(3, st, 1, count_include_pad=False),
        'skip_connect': lambda C, st, a: nn.Identity() if st == 1 else FactorizedReduce(C, C, a),
        'sep_conv_3x3': lambda C, st, a: SepConv(C, C, 3, st, 1, a),
        'sep_conv_5x5': lambda C, st, a: SepConv(C, C, 5, st, 2, a),
        'dil_conv_3x3': lambda C, st, a: DilConv(C, C, 3, st, 2, 2, a),
        'dil_conv_5x5': lambda C, st, a: DilConv(C, C, 5, st, 4, 2, a),
        'conv_1x1': lambda C, st, a: ReLUConvBN(C, C, 1, st, 0, a),
        'conv_3x3': lambda C, st, a: ReLUConvBN(C, C, 3, st, 1, a),
    }

    def search_op(name, C, st):
        op = OPS[name](C, st, False)
        return nn.Sequential(op, nn.BatchNorm2d(C, affine=False)) if 'pool' in name else op

    class MixedOp(nn.Module):
        def __init__(s, C, st):
            super().__init__(); s.ops = nn.ModuleList(search_op(n, C, st) for n in OPS_ORDER)
        def forward(s, x, w):
            return sum(wi * op(x) for wi, op in zip(w, s.ops))

    class SearchCell(nn.Module):
        def __init__(s, Cpp, Cp, C, red, red_prev):
            super().__init__(); s.red = red
            s.pre0 = FactorizedReduce(Cpp, C, False) if red_prev else ReLUConvBN(Cpp, C, 1, 1, 0, False)
            s.pre1 = ReLUConvBN(Cp, C, 1, 1, 0, False)
            s.ops = nn.ModuleList(MixedOp(C, 2 if red and j < 2 else 1) for i in range(4) for j in range(2 + i))
        def forward(s, s0, s1, w):
            st = [s.pre0(s0), s.pre1(s1)]; off = 0
            for i in range(4):
                st.append(sum(s.ops[off + j](h, w[off + j]) for j, h in enumerate(st))); off += len(st) - 1
            return torch.cat(st[-4:], 1)

    class SearchNet(nn.Module):
        def __init__(s, C, L, reductions, classes=10):
            super().__init__()
            s.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            Cpp, Cp, Cc, rp = 3 * C, 3 * C, C, False; s.cells = nn.ModuleList()
            for i in range(L):
                r = i in reductions
                if r: Cc *= 2
                s.cells.append(SearchCell(Cpp, Cp, Cc, r, rp)); rp = r; Cpp, Cp = Cp, 4 * Cc
            s.fc = nn.Linear(Cp, classes)
            s.alphas_normal = nn.Parameter(1e-3 * torch.randn(14, 8))
            s.alphas_reduce = nn.Parameter(1e-3 * torch.randn(14, 8))
        def forward(s, x):
            s0 = s1 = s.stem(x)
            for c in s.cells:
                w = F.softmax(s.alphas_reduce if c.red else s.alphas_normal, dim=-1)
                s0, s1 = s1, c(s0, s1, w)
            return s.fc(F.adaptive_avg_pool2d(s1, 1).flatten(1))
        def weights(s):
            return [p for n, p in s.named_parameters() if not n.startswith('alphas')]

    def drop_path(x, p):
        # In place, as in the reference code: no op's backward reads its own output.
        keep = 1. - p
        mask = torch.empty(x.size(0), 1, 1, 1).bernoulli_(keep)
        return x.div_(keep).mul_(mask)

    class Cell(nn.Module):
        def __init__(s, Cpp, Cp, C, red, red_prev, g):
            super().__init__()
            s.pre0 = FactorizedReduce(Cpp, C) if red_prev else ReLUConvBN(Cpp, C, 1, 1, 0)
            s.pre1 = ReLUConvBN(Cp, C, 1, 1, 0)
            pairs = g['reduce'] if red else g['normal']
            s.idx = [i for _, i in pairs]
            s.ops = nn.ModuleList(OPS[n](C, 2 if red and i < 2 else 1, True) for n, i in pairs)
        def forward(s, s0, s1, p):
            st = [s.pre0(s0), s.pre1(s1)]
            for i in range(4):
                hs = []
                for k in (2 * i, 2 * i + 1):
                    h = s.ops[k](st[s.idx[k]])
                    if s.training and p > 0 and not isinstance(s.ops[k], nn.Identity):
                        h = drop_path(h, p)
                    hs.append(h)
                st.append(hs[0] + hs[1])
            return torch.cat(st[2:], 1)

    class NetworkCIFAR(nn.Module):
        def __init__(s, C, L, classes=10, g=DARTS_V2):
            super().__init__(); s.p = 0.
            s.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            Cpp, Cp, Cc, rp = 3 * C, 3 * C, C, False; s.cells = nn.ModuleList()
            for i in range(L):
                r = i in [L // 3, 2 * L // 3]
                if r: Cc *= 2
                s.cells.append(Cell(Cpp, Cp, Cc, r, rp, g)); rp = r; Cpp, Cp = Cp, 4 * Cc
            s.fc = nn.Linear(Cp, classes)
        def forward(s, x):
            s0 = s1 = s.stem(x)
            for c in s.cells: s0, s1 = s1, c(s0, s1, s.p)
            return s.fc(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def train_step(net, params, x, y):
        # PyTorch's fastest honest CPU step: gradients set to None rather than zeroed, and
        # the multi-tensor (foreach) SGD and norm clipping, which CPU tensors only get when
        # asked for.
        opt = torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=3e-4, foreach=True)
        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            nn.utils.clip_grad_norm_(params, 5., foreach=True)
            opt.step()
        return step

    labels = lambda b: torch.arange(b) % 10
    if row == 'supernet_cell_b64':
        net = SearchNet(16, 1, []).train(); x = torch.randn(64, 3, 32, 32)
        return train_step(net, net.weights(), x, labels(64))
    if row == 'supernet_8_b16':
        net = SearchNet(16, 8, [8 // 3, 2 * 8 // 3]).train(); x = torch.randn(16, 3, 32, 32)
        return train_step(net, net.weights(), x, labels(16))
    if row == 'darts_v2_train_b64':
        net = NetworkCIFAR(16, 8).train(); net.p = 0.2; x = torch.randn(64, 3, 32, 32)
        return train_step(net, list(net.parameters()), x, labels(64))
    if row in ('darts_v2_infer_b64', 'darts_v2_c36_infer_b1'):
        c, l, b = (16, 8, 64) if row == 'darts_v2_infer_b64' else (36, 20, 1)
        net = NetworkCIFAR(c, l).eval(); x = torch.randn(b, 3, 32, 32)
        def infer():
            with torch.inference_mode(): net(x).sum().item()
        return infer
    if row == 'ort_darts_v2_c36_b1_t1':
        import onnxruntime as ort, tempfile
        net = NetworkCIFAR(36, 20).eval(); x = torch.randn(1, 3, 32, 32)
        path = os.environ.get('TORCH_BENCH_ONNX') or os.path.join(tempfile.mkdtemp(), 'torch_darts_v2.onnx')
        torch.onnx.export(net, x, path, input_names=['input'], output_names=['logits'],
                          opset_version=17, dynamo=False)
        o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, o, providers=['CPUExecutionProvider']); xi = x.numpy()
        for _ in range(20): sess.run(None, {'input': xi})
        return lambda: sess.run(None, {'input': xi})
    if row.startswith('op_'):
        name, st = row[3:].rsplit('_s', 1)
        st = int(st)
        op = search_op(name, 16, st).train()
        x = torch.randn(64, 16, 32, 32, requires_grad=True)
        def fb():
            y = op(x)
            if y.requires_grad: y.sum().backward()
        return fb
    raise SystemExit(f'unknown row {row}')


def mem(key):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024.
    return float('nan')


def child(row, runs, threads):
    import torch, torch.nn as nn, torch.nn.functional as F
    torch.set_num_threads(threads); torch.manual_seed(0)
    f = build(row, torch, nn, F)
    base = mem('VmRSS')
    f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    ts.sort()
    print(json.dumps(dict(row=row, seconds=ts[len(ts) // 2], runs=runs,
                          peak_mib=mem('VmHWM') - base)))


def main():
    a = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    a.add_argument('--row'); a.add_argument('--rows', default='', help='substring filter')
    a.add_argument('--runs', type=int, default=0, help='timed runs (default: 5 for steps, 50 for ops, 300 for batch 1)')
    a.add_argument('--threads', type=int, default=2)
    a.add_argument('--out')
    o = a.parse_args()
    runs_for = lambda r: o.runs or (300 if r.endswith('b1') or r.endswith('t1') else 30 if r.startswith('op_') else 5)
    if o.row:
        return child(o.row, runs_for(o.row), o.threads)
    out = []
    # The ONNX Runtime row keeps torch.onnx's file beside the JSON, for speed.rs to time
    # next to nas-pipe's export in one process.
    onnx = os.path.abspath((o.out or 'torch_bench') + '.torch_darts_v2.onnx')
    env = dict(os.environ, TORCH_BENCH_ONNX=onnx)
    for r, what in rows().items():
        if o.rows not in r: continue
        p = subprocess.run([sys.executable, __file__, '--row', r, '--runs', str(runs_for(r)),
                            '--threads', str(o.threads)], capture_output=True, text=True, env=env)
        if p.returncode != 0:
            sys.exit(f'{r}: {p.stderr.strip()}')
        d = json.loads(p.stdout.strip().splitlines()[-1]); out.append(d)
        print(f"{what:<56} {d['seconds'] * 1e3:10.2f} ms {d['peak_mib']:8.1f} MiB", file=sys.stderr)
    text = json.dumps(dict(torch=__import__('torch').__version__, threads=o.threads, rows=out,
                           onnx=onnx if os.path.exists(onnx) else None), indent=1)
    if o.out:
        with open(o.out + '.tmp', 'w') as f: f.write(text)
        os.replace(o.out + '.tmp', o.out)
    else:
        print(text)


if __name__ == '__main__':
    main()
