"""DARTS_V2 (C=36, 20 cells, CIFAR) in evaluation mode, built as in the DARTS reference code
(../shared/reference/darts.md), exported with torch.onnx and timed in ONNX Runtime next to
nas-pipe's export of the same network. Run by hand, never in CI (PyTorch is 5 GB):

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch onnxruntime==1.32.0 onnx numpy
    nas-pipe train C36.ron --out /tmp/x && nas-pipe export C36.ron --out /tmp/x
    /tmp/tv/bin/python benches/reference/darts_v2_onnx.py /tmp/x/<name>/model.onnx

where C36.ron retrains DARTS_V2 at channels 36, layers 20 on 3x32x32 data (any data: only
the graph is timed). Prints batch-1 p50 latency on 1 and 2 threads for both files.
"""
import sys, time, torch, torch.nn as nn, numpy as np, onnxruntime as ort
torch.manual_seed(0)
class ReLUConvBN(nn.Sequential):
    def __init__(s, ci, co, k, st, p): super().__init__(nn.ReLU(False), nn.Conv2d(ci, co, k, st, p, bias=False), nn.BatchNorm2d(co))
class DilConv(nn.Sequential):
    def __init__(s, ci, co, k, st, p, d): super().__init__(nn.ReLU(False), nn.Conv2d(ci, ci, k, st, p, dilation=d, groups=ci, bias=False), nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co))
class SepConv(nn.Sequential):
    def __init__(s, ci, co, k, st, p): super().__init__(DilConv(ci, ci, k, st, p, 1), DilConv(ci, co, k, 1, p, 1))
class FactorizedReduce(nn.Module):
    def __init__(s, ci, co):
        super().__init__(); s.r=nn.ReLU(False); s.c1=nn.Conv2d(ci, co//2, 1, 2, bias=False); s.c2=nn.Conv2d(ci, co//2, 1, 2, bias=False); s.bn=nn.BatchNorm2d(co)
    def forward(s, x): x=s.r(x); return s.bn(torch.cat([s.c1(x), s.c2(x[:, :, 1:, 1:])], 1))
OPS={'max_pool_3x3': lambda C, st: nn.MaxPool2d(3, st, 1),
     'skip_connect': lambda C, st: nn.Identity() if st==1 else FactorizedReduce(C, C),
     'sep_conv_3x3': lambda C, st: SepConv(C, C, 3, st, 1),
     'dil_conv_3x3': lambda C, st: DilConv(C, C, 3, st, 2, 2)}
normal=[('sep_conv_3x3',0),('sep_conv_3x3',1),('sep_conv_3x3',0),('sep_conv_3x3',1),('sep_conv_3x3',1),('skip_connect',0),('skip_connect',0),('dil_conv_3x3',2)]
reduce=[('max_pool_3x3',0),('max_pool_3x3',1),('skip_connect',2),('max_pool_3x3',1),('max_pool_3x3',0),('skip_connect',2),('skip_connect',2),('max_pool_3x3',1)]
class Cell(nn.Module):
    def __init__(s, Cpp, Cp, C, red, red_prev):
        super().__init__()
        s.pre0 = FactorizedReduce(Cpp, C) if red_prev else ReLUConvBN(Cpp, C, 1, 1, 0)
        s.pre1 = ReLUConvBN(Cp, C, 1, 1, 0)
        g = reduce if red else normal
        s.idx=[i for _, i in g]
        s.ops=nn.ModuleList([OPS[n](C, 2 if red and i < 2 else 1) for n, i in g])
    def forward(s, s0, s1):
        st=[s.pre0(s0), s.pre1(s1)]
        for i in range(4):
            st.append(s.ops[2*i](st[s.idx[2*i]]) + s.ops[2*i+1](st[s.idx[2*i+1]]))
        return torch.cat(st[2:], 1)
class Net(nn.Module):
    def __init__(s, C=36, L=20, classes=10):
        super().__init__()
        s.stem=nn.Sequential(nn.Conv2d(3, 3*C, 3, padding=1, bias=False), nn.BatchNorm2d(3*C))
        Cpp, Cp, Cc = 3*C, 3*C, C; s.cells=nn.ModuleList(); rp=False
        for i in range(L):
            r = i in [L//3, 2*L//3]
            if r: Cc*=2
            s.cells.append(Cell(Cpp, Cp, Cc, r, rp)); rp=r; Cpp, Cp = Cp, 4*Cc
        s.gap=nn.AdaptiveAvgPool2d(1); s.fc=nn.Linear(Cp, classes)
    def forward(s, x):
        s0=s1=s.stem(x)
        for c in s.cells: s0, s1 = s1, c(s0, s1)
        return s.fc(s.gap(s1).flatten(1))
net=Net().eval()
print('params', sum(p.numel() for p in net.parameters()))
x=torch.randn(1,3,32,32)
ours = sys.argv[1]
theirs = '/tmp/torch_darts_v2.onnx'
torch.onnx.export(net, x, theirs, input_names=['input'], output_names=['logits'], opset_version=17, dynamo=False)
def bench(path, t):
    o=ort.SessionOptions(); o.intra_op_num_threads=t
    s=ort.InferenceSession(path, o); xi=x.numpy()
    for _ in range(30): s.run(None, {'input': xi})
    ts=[]
    for _ in range(300):
        a=time.perf_counter(); s.run(None, {'input': xi}); ts.append(time.perf_counter()-a)
    ts.sort(); return ts[150]*1e3
for name, p in [('torch.onnx', theirs), ('nas-pipe', ours), ('torch.onnx', theirs), ('nas-pipe', ours)]:
    print('%-10s p50 ms: 1 thread %.2f, 2 threads %.2f' % (name, bench(p, 1), bench(p, 2)))
