#!/usr/bin/env python3
"""Per-module JIT time of candle's PTX kernels on this GPU (scripts/bench-gpu.sh runs it):
    CUDA_CACHE_DISABLE=1 python3 scripts/cuda_jit_times.py PTX_DIR
Each module alone, then all at once in parallel threads, the driver's cache disabled."""
import ctypes, glob, os, sys, threading, time
cuda = ctypes.CDLL("libcuda.so.1")
assert cuda.cuInit(0) == 0
dev = ctypes.c_int(); assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0
ctx = ctypes.c_void_p(); assert cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.ptx")))
datas = {os.path.basename(f): open(f, "rb").read() + b"\0" for f in files}
def load(name, out):
    cuda.cuCtxSetCurrent(ctx)
    m = ctypes.c_void_p(); t = time.time()
    r = cuda.cuModuleLoadData(ctypes.byref(m), ctypes.c_char_p(datas[name]))
    out[name] = (r, time.time() - t)
serial = {}
t = time.time()
for n in datas: load(n, serial)
total = time.time() - t
for n, (r, dt) in sorted(serial.items(), key=lambda kv: -kv[1][1]):
    print(f"jit {n}: {len(datas[n]) / 1e6:.2f} MB ptx, {dt:.2f} s, rc {r}")
par = {}
t = time.time()
ths = [threading.Thread(target=load, args=(n, par)) for n in datas]
[th.start() for th in ths]; [th.join() for th in ths]
print(f"jit all serial {total:.2f} s; all in parallel threads {time.time() - t:.2f} s (longest alone {max(dt for _, dt in par.values()):.2f} s)")
