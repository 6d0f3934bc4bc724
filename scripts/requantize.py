"""Writes a cheaper quantisation (Q4_0) of a Q4_1 GGUF: every Q4_1 tensor dequantised and quantised
again as Q4_0, everything else (metadata, other tensors) copied. For `stacknet-bench validate`'s
detection rate of a same-model cheaper quant: a worker that runs this file while claiming the
Q4_1 file's sha256."""
import sys
import numpy as np
import gguf
from gguf import quants, GGMLQuantizationType as Q

src, dst = sys.argv[1], sys.argv[2]
r = gguf.GGUFReader(src)
arch = r.fields["general.architecture"]
arch = bytes(arch.parts[arch.data[0]]).decode()
w = gguf.GGUFWriter(dst, arch)
for f in r.fields.values():
    if f.name.startswith("GGUF.") or f.name == "general.architecture":
        continue
    if f.name == "general.file_type":
        w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
        continue
    vtype = f.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        sub = f.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            val = [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        else:
            val = [f.parts[i].tolist()[0] for i in f.data]
        w.add_key_value(f.name, val, vtype, sub_type=sub)
    elif vtype == gguf.GGUFValueType.STRING:
        w.add_key_value(f.name, bytes(f.parts[f.data[0]]).decode("utf-8", "replace"), vtype)
    else:
        w.add_key_value(f.name, f.parts[f.data[0]].tolist()[0], vtype)
changed = 0
for t in r.tensors:
    shape = [int(x) for x in reversed(t.shape.tolist())]  # numpy order
    if t.tensor_type == Q.Q4_1:
        data = quants.dequantize(t.data, Q.Q4_1).reshape(shape)
        qd = quants.quantize(data.astype(np.float32), Q.Q4_0)
        w.add_tensor(t.name, qd, raw_shape=qd.shape, raw_dtype=Q.Q4_0)
        changed += 1
    else:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"{changed} tensors Q4_1 -> Q4_0 in {dst}")
