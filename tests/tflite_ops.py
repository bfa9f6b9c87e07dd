"""Read the operator names of a .tflite file straight from the schema, independent of mcc's own reader."""

from ai_edge_litert import schema_py_generated as schema

_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def operator_names(data: bytes) -> list[str]:
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [_NAMES[codes[op.opcodeIndex]] for sg in model.subgraphs for op in sg.operators]
