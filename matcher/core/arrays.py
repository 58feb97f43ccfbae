"""Array type aliases for annotations (numpy.typing), shared by the core and the layers above.

Annotations only: nothing here converts or checks at run time. The dtype in an alias is the
one the code guarantees (e.g. driver keys are always int64); ``AnyArray`` is for columns whose
dtype varies (a table column chosen by name, a str or bytes hash array).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AnyArray", "ArrayLike", "BoolArray", "F32Array", "F64Array", "I8Array", "I64Array", "U64Array"]

AnyArray: TypeAlias = NDArray[Any]
BoolArray: TypeAlias = NDArray[np.bool_]
F32Array: TypeAlias = NDArray[np.float32]
F64Array: TypeAlias = NDArray[np.float64]
I8Array: TypeAlias = NDArray[np.int8]
I64Array: TypeAlias = NDArray[np.int64]
U64Array: TypeAlias = NDArray[np.uint64]
