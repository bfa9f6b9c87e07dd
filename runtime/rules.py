"""Which integer arithmetic each target's kernels perform, per (runtime, version, operator): the rule table.

Bit-exactness is a property of a kernel library at a version, not of "int8": LiteRT's reference kernels,
its XNNPACK delegate and onnxruntime requantize the same accumulator differently, and TFLite changed its own
rules between releases (reference FULLY_CONNECTED moved from gemmlowp double rounding to a float64 multiply
in 2025). TFLite hard-codes one behaviour per build; mcc keeps every behaviour it matches as data here, so
the runtime can be pointed at any of them with `run(graph, feeds, rules="litert-xnnpack")` and a new
interpreter version is a new block of rows, not a new branch in a kernel.

A rule is (kernels, rounding). `kernels` names the library whose code runs the op: "tflite" (TFLite's
builtin kernels, reference or optimized), "xnnpack" or "onnxruntime"; it fixes how scale factors are prepared
(float64 vs float32 arithmetic) and how a fused activation's bounds are quantized (TFLite: round(f / s) half
away from zero, plus zp; XNNPACK: rint(f / s + zp), ties to even; onnxruntime has no fused activations, and
the int8 Clip that the ONNX writer puts after the operator carries TFLite's bounds). `rounding` names how
results are rounded:

- double_rounding: QuantizeMultiplier, then SaturatingRoundingDoublingHighMul and RoundingDivideByPOT.
- float64_round_half_away: round(double(acc) * double(s_in * s_w / s_out)), ties away from zero.
- float32_ties_even: rint(float32(acc) * float32(s_in * s_w / s_out)), ties to even.
- add_shift20_double_rounding: TFLite ADD/SUB, inputs shifted left by 20 and rescaled by double rounding.
- add_multiplier_shift_half_up: XNNPACK ADD/SUB, 21-bit multipliers and one arithmetic shift, ties up.
- divide_round_half_away: AVERAGE_POOL_2D's integer division of the window sum; QUANTIZE's round(x / s).
- mean_shifted_multiplier: TFLite MEAN, 1/n folded into the multiplier by a shift and an integer division.
- mean_float32_ties_even: XNNPACK MEAN, rint(float32(sum) * scale + zero-point term).
- multiply_inverse_ties_even: XNNPACK QUANTIZE, rint(x * (1 / s)) + zp.
- multiplier_8bit_half_up: XNNPACK int8 -> int8 QUANTIZE and LEAKY_RELU, (dx * rint(256 * ratio) + 128) >> 8.
- lut_float32_round_half_away: TFLite's 256-entry table (LUTPopulate): f(s * (q - zp)) in float32, rounded
  half away from zero (LOGISTIC, TANH).
- lut_float_ties_even: XNNPACK's table from its reference kernel: f((q - zp) * s), rint(y / s + zp).
- hardswish_fixed_point16: TFLite's HARD_SWISH in 16-bit gemmlowp fixed point.
- softmax_gemmlowp_fixed_point: TFLite's reference SOFTMAX (exp_on_negative_values, Newton-Raphson 1 / x).
- softmax_float32_exp_table: TFLite's optimized SOFTMAX, expf table, float32 row sum, round half away.
- nearest_float32_index: TFLite's reference RESIZE_NEAREST_NEIGHBOR, source index floor((o + offset) * scale)
  in float32 (align_corners: rounded half away).
- nearest_fixed_point16_index: its optimized kernel, without flags (o * ((in << 16) // out + 1)) >> 16.
- bilinear_fixed_point10_half_away: TFLite's RESIZE_BILINEAR (ResizeBilinearInteger), 10-bit fixed-point scale
  and weights, the 2**20-scaled sum rounded half away from zero.
- bilinear_q11_half_up: XNNPACK's RESIZE_BILINEAR, float32 coordinates, weights rint(2048 * fraction),
  (sum + 2**21) >> 22.
- add_float32_fma_ties_even: onnxruntime's QLinearAdd (MLAS AVX2), on the raw codes: fma(a, sa/so, fma(b, sb/so,
  zo - fma(sa/so, za, sb/so * zb))), each step one float32 rounding, then rint.
- float32_zero_point_ties_even: onnxruntime's QLinearMul, rint(float32(prod) * ((sa * sb) / so) + zo).
- average_float32_ties_even: onnxruntime's QLinearAveragePool: float32 dequantized inputs, float32 window sum
  and division by the count, rint(avg / so + zo); a window over the whole unpadded image is the global pool's.
- mean_float32_scale_ties_even: onnxruntime's QLinearGlobalAveragePool, rint(float32(sum - n * zi) *
  (si / (so * n))) + zo.
- softmax_ort_exp_table: onnxruntime's QLinearSoftmax, a float table of exp in double shifted by logf(FLT_MAX / n),
  float32 row sum, rint(e * floor(1 / so) / sum) + zo with the quotient in double, clamped.
- divide_ties_even: onnxruntime's QuantizeLinear, rint(clamp(x / s)) + zp, NaN to the lowest code.
- exact: no rounding (data movement, max pooling, dequantize's one float32 product).
- reduced_multiplier_half_up: TFLite's 16x8 CONV_2D / DEPTHWISE_CONV_2D, MultiplyByQuantizedMultiplier on the
  int64 accumulator: the multiplier rounded to 16 bits, one product, one shift, ties toward +infinity.
- add_shift15_double_rounding: TFLite's 16x8 ADD (pot_scale_int16 false), the int8 rule with a shift of 15.
- add_shift15_neon_blocks: its optimized kernel on same-shape inputs, blocks of 16 elements through the NEON
  branch (each input shifted by 15 + its own shift, one doubling high multiply), the reference rule on the tail
  and on broadcasts.
- multiply_inverse_ties_even_int32_min: TFLite's optimized float32 -> int16 QUANTIZE, rint(x * (1 / s)) + zp in
  blocks of 8 of the flat tensor, the last size % 8 elements as its scalar tail computes them (round half away of
  x / s in double), NaN and values beyond int32 to INT32_MIN.

Float islands (float ops between DEQUANTIZE and QUANTIZE in an int8 model) are bit-exact only if mcc's float
kernel sums as the peer does, since a QUANTIZE after them turns a last-bit difference at a rounding tie into a
code. Measured for batch_matmul (the attention products of transformers; tests/test_torch_idioms.py):
- float32_multiply_add_in_order: TFLite's reference BATCH_MATMUL, total += a * b over k in order, the product
  and the sum each rounded to float32 (0 of 128 differ at K = 16, 300, 700; FMA differs in 53 to 99).
- float32_fma_in_order: XNNPACK's f32 GEMM, one fused multiply-add per k in order (0 of 128 at K = 16, 300,
  700; the unfused sum differs in 47 to 98); onnxruntime's MatMul (MLAS SGEMM, AVX2) too for K <= 128 (0 differ
  at every M, N measured, 3 to 300). Beyond K = 128 MLAS sums K in blocks whose depth depends on N (its packing
  stride: 128 for N >= K, 256 at N = 128, 512 at N = 64, 1024 at N <= 32, each block's FMA sum added in
  float32), and columns past a multiple of 16 differ again: not reproduced, so an x86-int8 float island of a
  batch_matmul deeper than 128 is not claimed exact.
Measured for conv2d and depthwise_conv2d (key "float_conv": the layers `--fallback float` keeps float; runtime/
kernels/conv.py; tests/test_analyze.py: 15 shapes, 1x1 to 7x7, rectangular, dilated, strided, grouped, depthwise
multiplier 1 and 2, 45,168 elements, 0 differing under either set):
- float32_multiply_add_bias_last: TFLite's reference CONV_2D / DEPTHWISE_CONV_2D, sum of products over filter row,
  column, input channel, each rounded to float32, then the bias.
- float32_fma_bias_first: XNNPACK's f32 IGEMM / DWCONV, the accumulator starts at the bias, one FMA per tap;
  taps row-major, except its single-pass depthwise (multiplier 1, at most 25 taps), which walks them column-major.
onnxruntime's Conv (MLAS im2col and blocked SGEMM) is not reproduced: an x86-int8 float-island conv is not
claimed exact.
Measured for a bilinear resize (op "resize"; nearest copies pixels and has no rule), each peer with its own
coordinates and blend (runtime/kernels/resize.py; tests/test_resize_float_rules.py: 10 sizes up, down, odd,
1 -> 3x4 and 6x7 -> 1, 12,408 elements per coordinate mode, 0 differing under the claimed set; under another
set 3,247 to 8,739 differ):
- bilinear_float32_corner_products: TFLite's reference RESIZE_BILINEAR, coordinate o * (in / out) (half pixel:
  (o + 0.5) * s - 0.5, unclamped), each corner v * (1 - wy) * (1 - wx), the four summed in order.
- bilinear_float32_lerp: XNNPACK's f32 resize (the default resolver delegates RESIZE_BILINEAR), coordinate
  o * s (half pixel: + (0.5 * s - 0.5), clamped), t = tl + (tr - tl) * ax, b likewise, t + (b - t) * ay,
  unfused (fused multiply-adds differ in up to 47 percent of the elements).
- bilinear_float32_weight_products: onnxruntime's Resize (linear, NCHW), the IR's coordinate clamped, weights
  dx1 = c - lower and dx2 = |c - upper|, (dx * dy) * v per corner summed in order, unfused (fused: up to 31
  percent differ; two lerps with these weights, mcc's blend before: up to 52 percent).

Where the delegate declines an op for its parameters (int8 -> int8 QUANTIZE or LEAKY_RELU with a scale
ratio outside [1/256, 128], ADD / SUB with an input-to-output ratio below 2**-10, MUL with sa * sb / so below
2**-16, a conv / FC bias without quantization), LiteRT runs TFLite's kernel instead; the first four fall back to
the TFLite arithmetic (measured equal; ADD, SUB and MUL by benchmarks/fuzz_rules.py), the last is refused, as
is ADD, SUB or MUL with a ratio at or above 2**8 (TFLite's optimized kernel then parts from its reference) (TFLite's optimized
FULLY_CONNECTED goes through ruy, which mcc does not reproduce).

"requantize" is QUANTIZE with an int8 input; "quantize" is QUANTIZE with a float input. "resize_nearest" and
"resize_bilinear" are the IR's resize by its mode (two TFLite operators).

Measured with ai-edge-litert 2.3.0 on x86-64 (Xeon, AVX-512) by tests/test_int8_kernels.py (slice, split and
resize: tests/test_slice_split_resize.py, on int8 inputs over the whole range): each single-op
int8 model runs in LiteRT with OpResolverType.BUILTIN_REF ("ref") and with the default resolver ("default":
XNNPACK for the ops whose rule says "xnnpack", TFLite's optimized kernels for the rest, which the test
checks op by op), and in mcc's runtime on the file read back. Weight and activation scales are powers of two and 3/4 of the inputs lie near the zero
point, so many results land exactly on .5, and the rest saturate. Differing elements, mcc vs LiteRT:

| case | elements | ref vs litert-ref | default vs litert-xnnpack | ref vs default (= wrong rule set) |
|---|---|---|---|---|
| conv2d, per-channel weights, relu | 2048 | 0 | 0 | 155 |
| conv2d, per-tensor weights, stride 2, relu6 | 256 | 0 | 0 | 4 |
| depthwise_conv2d, multiplier 2 | 1024 | 0 | 0 | 179 |
| fully_connected, per-channel | 1024 | 0 | 0 | 41 |
| fully_connected, per-tensor, 3-D input, relu | 512 | 0 | 0 | 22 |
| add, same shape, scales 0.05/0.08/0.1, relu | 1024 | 0 | 0 | 13 |
| add, channel broadcast, scales 0.5/0.25/0.5 | 1024 | 0 | 0 | 405 |
| sub, same shape | 1024 | 0 | 0 | 41 |
| mul, broadcast, relu | 1024 | 0 | 0 | 44 |
| max_pool2d, relu6 at scale 12 (6/12 = .5: bounds [0, 1] vs [0, 0]) | 144 | 0 | 0 | 137 |
| avg_pool2d, SAME 2x2 (TFLite's kernel in both sets) | 1024 | 0 | 0 | 0 |
| mean over H, W, keepdims | 256 | 0 | 0 | 36 |
| mean over the last axis of [256, 8] | 256 | 0 | 0 | 25 |
| quantize float -> int8 (scales 0.1 and 0.25; NaN, inf, 1e10 included) | 2 x 1024 | 0 | 0 | 93, 119 |
| requantize int8 -> int8 (0.1 -> 0.3, 0.25 -> 1.0) | 2 x 1024 | 0 | 0 | 334, 258 |
| requantize 1.0 -> 0.005 (ratio 200: not delegated) | 1024 | 0 | 0 | 0 |
| dequantize, concat, reshape, transpose, pad (PAD and PADV2) | 1024, 208, 256, 192, 200 + 392 | 0 | 0 | 0 |
| minimum, maximum against a broadcast constant | 1024 each | 0 | 0 | 0 |
| relu, relu6 (bounds at .5), clip [-1, 1], hardswish x 2 (TFLite's kernel in both sets) | 256 each | 0 | 0 | 0 |
| sigmoid (scale 0.0625 -> 1/256), tanh (0.05 -> 1/128) | 256 each | 0 | 0 | 0 |
| tanh 0.125 -> 2.0 (saturated +-1.0f lands on +-0.5) | 256 | 0 | 0 | 111 |
| leaky_relu 0.2, 0.05 -> 0.04 | 256 | 0 | 0 | 66 |
| leaky_relu 0.1, ratio 1000 (not delegated) | 256 | 0 | 0 | 0 |
| softmax, rows of 4, 10 and 100 (beta 1, 1, 0.7; TFLite's kernels in both sets) | 260000 | 0 | 0 | 3 |
| slice (SLICE, STRIDED_SLICE with a negative step), split (SPLIT, SPLIT_V) | 192 + 108, 2 x 384 | 0 | 0 | 0 |
| resize_bilinear, 3 coordinate modes x 9 sizes (1 -> 1 .. 13 -> 31, 2 -> 82) | 3 x 23868 | 0 | 0 | 6133, 8722, 5216 |
| resize_nearest, the same (half_pixel, align_corners, asymmetric) | 3 x 23868 | 0 | 0 | 0, 0, 68 (2 -> 82) |

The activations are run on all 256 int8 inputs, so those rows are exhaustive for their parameters.

A chain conv2d (relu6) -> depthwise_conv2d -> add (relu) -> mean -> reshape -> fully_connected matches at
every intermediate tensor under both pairs. Notes from the measurements:
- Reference FULLY_CONNECTED is neither gemmlowp's double rounding nor single rounding (TFLite moved it to a
  float requantization in 2025): with weight scales k/7 and s_out = 11, double rounding differs in 33 of
  1024 elements (single rounding in 0); with power-of-two weight scales and s_out = 6, single rounding
  (sign(acc) * ((|acc| * M + 2**(30 - shift)) >> (31 - shift))) differs in 84 of 1024 (double rounding in 0);
  round(double(acc) * s_in * s_w / s_out), ties away, differs in neither.
- gemmlowp's SaturatingRoundingDoublingHighMul rounds ties upward (-1.5 -> -1), RoundingDivideByPOT away
  from zero; the pair is what CONV_2D, DEPTHWISE_CONV_2D, MUL and requantizing QUANTIZE use.
- TFLite's reference SOFTMAX aborts (TFLITE_CHECK) on a row whose exponentials sum to 512 or more; the
  runtime refuses such rows under litert-ref.
- int8 RESIZE_BILINEAR ignores the quantization in TFLite's reference kernel (input 0.5 -> output 0.25 gives
  the same integers); the XNNPACK delegate fails to prepare such a model instead of falling back, so LiteRT's
  default resolver refuses it. XNNPACK takes int8 RESIZE_BILINEAR, not RESIZE_NEAREST_NEIGHBOR; it takes SLICE
  and SPLIT, not STRIDED_SLICE with a step other than 1 nor SPLIT_V (all four copy bytes either way). The
  bilinear rows above are 1/4 to 1/3 apart between the kernel sets, by 1.
- XNNPACK takes an int8 CONV_2D / FULLY_CONNECTED only when its int32 bias carries quantization parameters;
  without them LiteRT runs TFLite's optimized (ruy) kernel, which matches neither rule set (78 of 200
  differ from float32_ties_even), so the runtime refuses that case under litert-xnnpack.

"onnxruntime" is onnxruntime 1.32.0's CPU execution provider on the same host (x86-64 with AVX2 and FMA, whose
MLAS kernels it dispatches to), for the int8 operators that formats.onnx.writer emits. Measured by
tests/test_onnx_validate.py: each hand-built int8 graph is written by write_onnx, run by onnxruntime at
ORT_ENABLE_ALL and ORT_DISABLE_ALL (the same integers at both) and by mcc's runtime on the file read back, with
power-of-two scales (the "ties" column counts outputs whose exact real value lies on .5) or arbitrary ones.
Differing elements, mcc vs onnxruntime:

| case | elements | ties | onnxruntime | litert-ref (wrong set) | litert-xnnpack |
|---|---|---|---|---|---|
| QLinearConv, per-channel weights, relu6 (int8 Clip) | 1536 | 106 | 0 | 55 | 0 |
| QLinearConv, per-tensor weights, stride 2 | 405 | 112 | 0 | 29 | 0 |
| QLinearConv depthwise, multiplier 2 | 1152 | 217 | 0 | 120 | 0 |
| QGemm, per-channel / per-tensor + relu | 384 / 240 | 24 / 20 | 0 | 11 / 3 | 0 |
| QLinearAdd and QLinearMul, every pair of int8 codes, scales 0.0173 / 0.0291 | 2 x 65536 | - | 0 | 562 | 0 |
| QLinearAdd, same shape, relu | 1024 | - | 0 | 44 | 44 |
| QLinearAdd, channel broadcast | 512 | 256 | 0 | 133 | 118 |
| QLinearAdd, first input broadcast, then a scalar | 300 | - | 0 | 2 | 2 |
| QLinearAdd, first input [256, 1] against every code of the second | 65536 | - | 0 | 41 | 39 |
| QLinearMul, channel broadcast, relu (odd zero point) / same shape | 512 / 1024 | 48 / - | 0 | 14 / 18 | 21 / 0 |
| QLinearAveragePool 3x3, padding 1 | 392 | 28 | 0 | 13 | 13 |
| QLinearAveragePool 2x2 rescaled, and a whole-image window | 40 | - | 0 | refused | refused |
| QLinearGlobalAveragePool (odd zero point) | 256 | 14 | 0 | 15 | 14 |
| QLinearSoftmax, rows of 10 and 100 at 1/256; axis 1 at scale 0.006 | 1148 | - | 0 | refused | refused |
| QuantizeLinear (halves, NaN, inf, 1e10) at 2**-3 and 0.1, DequantizeLinear | 8192 | 300 | 0 | 536 | 40 |
| the 8 table activations (Cast + Gather, tables from litert-ref) | 2048 | - | 0 | 0 | 149 |
| MaxPool + relu6 Clip, Max, Min, Concat, Pad, Transpose, Reshape | 660 | - | 0 | 0 | 0 |

"refused": TFLite's kernels have no such form (an average pool or softmax that requantizes to any scale, a
softmax over axis 1). The zoo compiled for x86-int8 shows 0 differing elements on every tensor at both levels;
under litert-ref, on 4 random inputs, 12 of 4,944 (digits_classifier) to 88,087 of 442,960 (resnet18_style),
while litert-xnnpack happens to match the zoo (it parts from onnxruntime on ties, as above). Notes from
single-operator models built with onnx.helper, exhaustive over every pair of int8 codes where there are two
inputs (the MLAS source says the same where read):
- QLinearConv and QGemm prepare (s_x * s_w) / s_y in float32: with scales where the orders part by one float32
  step, s_x * (s_w / s_y) differs in 646 of 98,304 (QGemm 274 of 131,072) and float64 rounded to float32 in
  488 (192); adding the zero point before the rounding differs in 10 of 20,898.
- QLinearAdd's constant term is itself fused (zo - fma(ra, za, rb * zb)): without the FMA, 18 of 983,040
  differ; with one input constant along the innermost run, its term joins by FMA too (8 of 7,864,320 differ
  without), and the input that varies is the kernel's `a` (keeping input 0 there: 3 of 983,040 differ, 21 of
  the 65,536 in the table's row); rounding each product and sum apart differs in 19.
- QLinearMul adds the zero point before rounding (after it: 120,804 of 11,796,480 differ; one FMA: 48).
- QuantizeLinear divides (multiplying by 1 / s: 2,050 of 444,420; ties away from zero: 7,518).
- QLinearAveragePool adds the zero point before rounding (after: 204 of 22,016); QLinearGlobalAveragePool after
  it (before: 106 of 10,240).
- QLinearSoftmax's table is float, not uint32 (1,870 of 853,888 differ), and a result above 127 (probability 1
  at scale 1/256: 256 - 128) saturates to 127 rather than wrapping to -128 (548 differ).
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import MccError


class Rule(NamedTuple):
    kernels: str   # "tflite", "xnnpack" or "onnxruntime": whose code runs the op (scale preparation, bounds)
    rounding: str  # one of the rounding names in this module's docstring


# Ops of issue 14 (ops-math) that pick or move int8 codes without arithmetic: exact in every kernel set.
_MATH_MOVES = ("reduce_max", "reduce_min", "gather", "tile", "depth_to_space", "space_to_depth")

_REF = {
    "conv2d": Rule("tflite", "double_rounding"),
    "depthwise_conv2d": Rule("tflite", "double_rounding"),
    "fully_connected": Rule("tflite", "float64_round_half_away"),
    "add": Rule("tflite", "add_shift20_double_rounding"),
    "sub": Rule("tflite", "add_shift20_double_rounding"),
    "mul": Rule("tflite", "double_rounding"),
    "max_pool2d": Rule("tflite", "exact"),
    "avg_pool2d": Rule("tflite", "divide_round_half_away"),
    "mean": Rule("tflite", "mean_shifted_multiplier"),
    "quantize": Rule("tflite", "divide_round_half_away"),
    "requantize": Rule("tflite", "double_rounding"),
    "dequantize": Rule("tflite", "exact"),
    "concat": Rule("tflite", "exact"),
    "reshape": Rule("tflite", "exact"),
    "transpose": Rule("tflite", "exact"),
    "pad": Rule("tflite", "exact"),
    "relu": Rule("tflite", "double_rounding"),
    "relu6": Rule("tflite", "double_rounding"),
    "clip": Rule("tflite", "double_rounding"),
    "leaky_relu": Rule("tflite", "double_rounding"),
    "sigmoid": Rule("tflite", "lut_float32_round_half_away"),
    "tanh": Rule("tflite", "lut_float32_round_half_away"),
    "hardswish": Rule("tflite", "hardswish_fixed_point16"),
    "softmax": Rule("tflite", "softmax_gemmlowp_fixed_point"),
    "minimum": Rule("tflite", "exact"),
    "maximum": Rule("tflite", "exact"),
    "slice": Rule("tflite", "exact"),
    "split": Rule("tflite", "exact"),
    "resize_nearest": Rule("tflite", "nearest_float32_index"),
    "resize_bilinear": Rule("tflite", "bilinear_fixed_point10_half_away"),
    **{op: Rule("tflite", "exact") for op in _MATH_MOVES},
    "batch_matmul": Rule("tflite", "float32_multiply_add_in_order"),
    "resize": Rule("tflite", "bilinear_float32_corner_products"),  # float bilinear: the blend of a float island
    "float_conv": Rule("tflite", "float32_multiply_add_bias_last"),  # float conv / depthwise of a float island
}

_XNNPACK = {
    "conv2d": Rule("xnnpack", "float32_ties_even"),
    "depthwise_conv2d": Rule("xnnpack", "float32_ties_even"),
    "fully_connected": Rule("xnnpack", "float32_ties_even"),
    "add": Rule("xnnpack", "add_multiplier_shift_half_up"),
    "sub": Rule("xnnpack", "add_multiplier_shift_half_up"),
    "mul": Rule("xnnpack", "float32_ties_even"),
    "max_pool2d": Rule("xnnpack", "exact"),
    # The delegate takes AVERAGE_POOL_2D in float only; int8 falls back to TFLite's optimized kernel.
    "avg_pool2d": Rule("tflite", "divide_round_half_away"),
    "mean": Rule("xnnpack", "mean_float32_ties_even"),
    "quantize": Rule("xnnpack", "multiply_inverse_ties_even"),
    "requantize": Rule("xnnpack", "multiplier_8bit_half_up"),
    "dequantize": Rule("xnnpack", "exact"),
    "concat": Rule("xnnpack", "exact"),
    "reshape": Rule("xnnpack", "exact"),
    "transpose": Rule("xnnpack", "exact"),
    "pad": Rule("xnnpack", "exact"),
    # The delegate takes RELU, RELU6, RELU_N1_TO_1 and HARD_SWISH in float only: TFLite's kernels run them.
    "relu": Rule("tflite", "double_rounding"),
    "relu6": Rule("tflite", "double_rounding"),
    "clip": Rule("tflite", "double_rounding"),
    "hardswish": Rule("tflite", "hardswish_fixed_point16"),
    # SOFTMAX is float-only in the delegate too; TFLite's optimized int8 kernel uses a float exp table.
    "softmax": Rule("tflite", "softmax_float32_exp_table"),
    "minimum": Rule("tflite", "exact"),  # int8 MINIMUM / MAXIMUM stay with TFLite too
    "maximum": Rule("tflite", "exact"),
    "leaky_relu": Rule("xnnpack", "multiplier_8bit_half_up"),
    "sigmoid": Rule("xnnpack", "lut_float_ties_even"),
    "tanh": Rule("xnnpack", "lut_float_ties_even"),
    "slice": Rule("xnnpack", "exact"),
    "split": Rule("xnnpack", "exact"),
    # Not delegated: TFLite's optimized kernel, whose flagless index is 16.16 fixed point.
    "resize_nearest": Rule("tflite", "nearest_fixed_point16_index"),
    "resize_bilinear": Rule("xnnpack", "bilinear_q11_half_up"),
    **{op: Rule("tflite", "exact") for op in _MATH_MOVES},
    "batch_matmul": Rule("xnnpack", "float32_fma_in_order"),
    "resize": Rule("xnnpack", "bilinear_float32_lerp"),  # float bilinear: the blend of a float island
    "float_conv": Rule("xnnpack", "float32_fma_bias_first"),  # float conv / depthwise of a float island
}

# What onnxruntime runs for each op of an x86-int8 ONNX file (formats.onnx.writer): its own integer operators,
# and for the activations the 256-entry tables and Clip bounds that the writer fills with TFLite's reference
# arithmetic (formats.onnx.opmap.TABLE_RULES), so those ops keep litert-ref's rules.
_TABLES = ("requantize", "relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "hardswish")
_ONNXRUNTIME = {
    "conv2d": Rule("onnxruntime", "float32_ties_even"),             # QLinearConv (also depthwise)
    "depthwise_conv2d": Rule("onnxruntime", "float32_ties_even"),
    "fully_connected": Rule("onnxruntime", "float32_ties_even"),    # com.microsoft QGemm
    "add": Rule("onnxruntime", "add_float32_fma_ties_even"),        # QLinearAdd
    "mul": Rule("onnxruntime", "float32_zero_point_ties_even"),     # QLinearMul
    "avg_pool2d": Rule("onnxruntime", "average_float32_ties_even"),  # QLinearAveragePool
    "mean": Rule("onnxruntime", "mean_float32_scale_ties_even"),    # QLinearGlobalAveragePool
    "softmax": Rule("onnxruntime", "softmax_ort_exp_table"),        # QLinearSoftmax
    "quantize": Rule("onnxruntime", "divide_ties_even"),            # QuantizeLinear
    **{op: Rule("onnxruntime", "exact") for op in ("dequantize", "max_pool2d", "concat", "reshape", "transpose",
                                                   "pad", "slice", "split", "minimum", "maximum")},
    # Resize (nearest) on int8 copies codes; legalize_tflite keeps only index settings whose float32 TFLite
    # formula reads the rows the IR (onnxruntime's arithmetic) reads: tests/test_onnx_validate.py.
    "resize_nearest": Rule("onnxruntime", "nearest_float32_index"),
    **{op: _REF[op] for op in _TABLES},
    **{op: Rule("onnxruntime", "exact") for op in _MATH_MOVES},
    "batch_matmul": Rule("onnxruntime", "float32_fma_in_order"),
    "resize": Rule("onnxruntime", "bilinear_float32_weight_products"),  # float bilinear: the blend of a float island
}

# TFLite's 16x8 kernels (int16 activations, zero point 0; int8 weights; int64 bias), keyed "op/int16": QUANTIZE
# with an int16 side is "requantize/int16" (from int8 or int16) or "quantize/int16" (from float32). Measured
# against LiteRT 2.3.0 by tests/test_int16_layers.py: BUILTIN_REF runs the reference kernels, and the default
# resolver runs the same ones (the XNNPACK delegate takes no int16 operator; TFLite's conv has no optimized
# kernel for an int64 bias), except for the float32 -> int16 QUANTIZE and the same-shape ADD, whose optimized
# kernels round otherwise.
# onnxruntime has no 16x8 operators (no int16 QLinearConv / QGemm), so its rule set has no such rows.
# Differing elements, mcc vs LiteRT (ref / default, the same under both matching rule sets), and under a wrong rule:
# | case | elements | matching set | wrong rule | REF vs default |
# | conv2d per channel, relu | 1024 | 0 | float64_round_half_away 49 | 0 |
# | depthwise_conv2d, multiplier 2 | 1024 | 0 | double_rounding 40 | 0 |
# | fully_connected per channel (scales k/7) / per tensor, relu | 512 / 512 | 0 | reduced_multiplier 31 / double 4 | 0 |
# | add same shape / 5x5x7 (tail 15), relu / broadcast | 1024 / 175 / 1024 | 0 | shift 20: 382 / 33 / 473 | 1 / 1 / 0 |
# | quantize float32 -> int16 (ties, NaN, inf, 1e10) | 4000 | 0 | - | 200 |
# | requantize int8 -> int16 / int16 -> int8 | 4000 each | 0 | multiplier_8bit_half_up 426 / 928 | 0 |
# | requantize int16 -> int16, dequantize int16, reshape int16 | 4000, 4000, 256 | 0 | - | 0 |
_REF_16X8 = {
    "conv2d/int16": Rule("tflite", "reduced_multiplier_half_up"),
    "depthwise_conv2d/int16": Rule("tflite", "reduced_multiplier_half_up"),
    "fully_connected/int16": Rule("tflite", "float64_round_half_away"),
    "add/int16": Rule("tflite", "add_shift15_double_rounding"),
    "quantize/int16": Rule("tflite", "divide_round_half_away"),
    "requantize/int16": Rule("tflite", "double_rounding"),
    "dequantize/int16": Rule("tflite", "exact"),
    "reshape/int16": Rule("tflite", "exact"),
}
_REF.update(_REF_16X8)
_XNNPACK.update(_REF_16X8, **{"quantize/int16": Rule("tflite", "multiply_inverse_ties_even_int32_min"),
                             "add/int16": Rule("tflite", "add_shift15_neon_blocks")})

# XNNPACK on aarch64 (issue 19): no rule set of its own. Measured under qemu-aarch64 7.2 (devices/qemu.py, the board
# showing its CPU to cpuinfo) for the CPU models of the Pi 4 (cortex-a72), Pi 5 (cortex-a76), Pi Zero 2 W
# (cortex-a53), against the same LiteRT 2.3.0 on x86-64: for every zoo int8 .tflite XNNPACK's NEON kernels compute
# the x86 bits, 0 differing elements of 3,708 / 380,004 / 248,109 / 115,098 (digits_classifier / resnet18_style /
# mobilenet_v2_style / mobilenet_v3_small_style, 3 samples), and mcc under "litert-xnnpack" matches them there. As
# the sources say: its aarch64 GEMM and depthwise kernels requantize in fp32 (float32 product, round to nearest
# even), ADD by multipliers and a rounding shift, DEQUANTIZE by one float32 product after an exact zero-point
# subtraction, as its x86 kernels do. The differences an earlier measurement reported (and an aarch64 set whose
# DEQUANTIZE was a fused multiply-add) were TFLite's builtin NEON kernels: the emulated board had no /sys, cpuinfo
# failed, and LiteRT silently ran without its XNNPACK delegate. onnxruntime 1.32.0 (MLAS) on aarch64 computes
# likewise: under cortex-a72 and cortex-a76, every zoo int8 .onnx gives the x86 bits at ort-all and ort-none (0 of
# 3,708 / 332,220 / 179,388 / 75,621), so "onnxruntime" serves both ISAs too. Under qemu's "max" CPU (dot product,
# i8mm, SVE; no board's) XNNPACK's int8 convs come out wrong (resnet18_style: 311,057 of 380,004 elements, by up to
# 255 codes), while neoverse-n1 (dot product, no i8mm or SVE) gives the x86 bits (resnet18_style,
# digits_classifier): XNNPACK's i8mm/SVE kernels under qemu 7.2, not resolved (an emulation problem or those
# kernels' own; no Pi has i8mm).

# (runtime, version, op) -> Rule. The runtime names match the peers' kernel sets: "litert-ref" is LiteRT's
# OpResolverType.BUILTIN_REF, "litert-xnnpack" its default resolver with the XNNPACK delegate (mcc.runtime.litert),
# "onnxruntime" the CPU execution provider on x86-64 with AVX2 (mcc.runtime.ort), at any optimization level.
RULES: dict[tuple[str, str, str], Rule] = {
    **{("litert-ref", "2.3.0", op): rule for op, rule in _REF.items()},
    **{("litert-xnnpack", "2.3.0", op): rule for op, rule in _XNNPACK.items()},
    **{("onnxruntime", "1.32.0", op): rule for op, rule in _ONNXRUNTIME.items()},
}

DEFAULT = "litert-ref"


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


class RuleSet:
    """The rules of one kernel set at one version; kernels ask it for the rule of their op."""

    def __init__(self, runtime: str, version: str):
        self.runtime, self.version = runtime, version
        self.rules = {op: rule for (rt, v, op), rule in RULES.items() if (rt, v) == (runtime, version)}

    @property
    def name(self) -> str:
        return f"{self.runtime}@{self.version}"

    def rule(self, op: str, node: str | None = None) -> Rule:
        if op not in self.rules:
            raise MccError(f"rule set {self.name} has no integer rule for '{op}' (it covers "
                           f"{', '.join(sorted(self.rules))}); run the graph in float or with another rule set",
                           node=node)
        return self.rules[op]

    def __repr__(self):
        return f"RuleSet({self.name})"


def known() -> dict[str, list[str]]:
    """Every rule-set name with its versions, oldest first."""
    out: dict[str, list[str]] = {}
    for runtime, version, _ in RULES:
        if version not in out.setdefault(runtime, []):
            out[runtime].append(version)
    return {rt: sorted(vs, key=_version_key) for rt, vs in sorted(out.items())}


def rule_set(name: str | RuleSet | None = None) -> RuleSet:
    """The rule set called `name`: "litert-ref" (its newest version) or "litert-ref@2.3.0"; None gives the
    default, TFLite's reference kernels, which are the specification the other kernel sets approximate."""
    if isinstance(name, RuleSet):
        return name
    runtime, _, version = (name or DEFAULT).partition("@")
    sets = known()
    if runtime not in sets:
        listing = "; ".join(f"{rt} (versions {', '.join(vs)})" for rt, vs in sets.items())
        raise MccError(f"unknown rule set '{name}'; known rule sets: {listing}. Name one as 'runtime' or "
                       "'runtime@version'")
    if version and version not in sets[runtime]:
        raise MccError(f"rule set '{runtime}' has no rules for version {version}; known versions: "
                       f"{', '.join(sets[runtime])}. Measure the new version's kernels and add its rows to "
                       "mcc.runtime.rules.RULES")
    return RuleSet(runtime, version or sets[runtime][-1])
