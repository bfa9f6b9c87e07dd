"""Unique names for readers and writers that build names as they walk a model."""


def claim_unique(taken: set, base: str) -> str:
    """`base`, else the first of `base_1`, `base_2`, ... not in `taken`; the name returned is added to `taken`."""
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name
