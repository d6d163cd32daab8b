"""The state a chunked pass keeps between chunks: attention keys and values, and convolution tails.

A chunk of new frames attends to every frame before it (upstream's models stream with all left chunks
in view) and each causal convolution reads a few frames before the chunk. Keeping exactly those makes a
chunk's work depend on the chunk's size, not on how much audio came before it, except for the attention
scores themselves (one dot product per new frame and earlier frame).
"""

import torch
import torch.nn.functional as F


class KeyValues:
    """Keys and values of one attention layer, grown in place: capacity grows by half when full (a copy of the
    store then; at most a third of the memory unused)."""

    def __init__(self):
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None
        self.length = 0

    def extend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (batch, heads, frames, dim) keys and values; return all of them so far."""
        end = self.length + keys.shape[2]
        if self._keys is None or end > self._keys.shape[2]:
            self._grow(keys, max(end, self.length * 3 // 2))
        self._keys[:, :, self.length : end] = keys
        self._values[:, :, self.length : end] = values
        self.length = end
        return self._keys[:, :, :end], self._values[:, :, :end]

    def _grow(self, like: torch.Tensor, capacity: int) -> None:
        shape = (*like.shape[:2], capacity, like.shape[3])
        keys, values = like.new_empty(shape), like.new_empty(shape)
        if self._keys is not None:
            keys[:, :, : self.length] = self._keys[:, :, : self.length]
            values[:, :, : self.length] = self._values[:, :, : self.length]
        self._keys, self._values = keys, values

    def copy(self) -> "KeyValues":
        """An independent copy of what is stored, with room to grow (a request starting from a voice's prefix)."""
        other = KeyValues()
        if self._keys is not None:
            other._grow(self._keys, self.length * 3 // 2 + 64)
            other._keys[:, :, : self.length] = self._keys[:, :, : self.length]
            other._values[:, :, : self.length] = self._values[:, :, : self.length]
            other.length = self.length
        return other

    def nbytes(self) -> int:
        if self._keys is None:
            return 0
        return 2 * self._keys[:, :, : self.length].numel() * self._keys.element_size()


class ChunkState:
    """Everything one chunked pass keeps, by name: key/value stores and convolution tails."""

    def __init__(self):
        self.attention: dict[str, KeyValues] = {}
        self.tails: dict[str, torch.Tensor] = {}

    def keys_values(self, name: str) -> KeyValues:
        store = self.attention.get(name)
        if store is None:
            store = self.attention[name] = KeyValues()
        return store

    def causal(self, name: str, x: torch.Tensor, context: int) -> torch.Tensor:
        """``x`` (batch, channels, frames) with the ``context`` frames before it in front (zeros at the start),
        and those of the result kept for the next chunk."""
        if context == 0:
            return x
        tail = self.tails.get(name)
        if tail is None:
            tail = x.new_zeros(*x.shape[:2], context)
        joined = torch.cat([tail, x], dim=2)
        self.tails[name] = joined[:, :, -context:].clone()  # not a view holding all of ``joined``
        return joined

    def copy(self) -> "ChunkState":
        other = ChunkState()
        other.attention = {name: store.copy() for name, store in self.attention.items()}
        other.tails = dict(self.tails)  # tensors are replaced, never written in place
        return other

    def nbytes(self) -> int:
        tails = sum(t.numel() * t.element_size() for t in self.tails.values())
        return tails + sum(store.nbytes() for store in self.attention.values())


class Rows:
    """Chunks of several streams packed along the frame axis, each with its stream's state: row ``i`` is
    ``lengths[i]`` frames starting at its stream's frame ``starts[i]``. Per-frame layers run over the packed
    tensor at once; attention and convolutions, which read a stream's earlier frames, run row by row."""

    def __init__(self, states: list[ChunkState], starts: list[int], lengths: list[int]):
        self.states, self.starts, self.lengths = states, starts, lengths

    @classmethod
    def one(cls, state: ChunkState, frames: int, start: int = 0) -> "Rows":
        return cls([state], [start], [frames])

    def split(self, x: torch.Tensor, dim: int) -> tuple[torch.Tensor, ...]:
        return x.split(self.lengths, dim=dim)

    def spans(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.lengths, strict=True))

    def masks(self, chunk: int, device) -> list[torch.Tensor]:
        return [chunk_mask(start, length, chunk, device) for start, length in self.spans()]

    def positions(self, device) -> torch.Tensor:
        return torch.cat([torch.arange(start, start + length, device=device) for start, length in self.spans()])


def causal_conv(rows: Rows, name: str, conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A left-padded (causal) convolution over each row's chunk (batch, channels, frames), as over its whole
    sequence: one convolution over the rows each with its kept tail in front, the outputs across a join dropped."""
    context = (conv.kernel_size[0] - 1) * conv.dilation[0]
    if len(rows.states) > 1 and conv.stride[0] != 1:
        raise ValueError("a strided convolution cannot run over packed rows")
    parts = [state.causal(name, part, context) for state, part in zip(rows.states, rows.split(x, 2), strict=True)]
    joined = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    out = F.conv1d(joined, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
    if context == 0 or len(parts) == 1:
        return out
    kept, start = [], 0  # row i's outputs start where its tail does in the joined input
    for length in rows.lengths:
        kept.append(out[:, :, start : start + length])
        start += context + length
    return torch.cat(kept, dim=2)


def chunk_mask(start: int, length: int, chunk: int, device) -> torch.Tensor:
    """(length, start + length) booleans: a new frame sees every earlier frame and its own chunk."""
    rows = torch.arange(start, start + length, device=device)
    ends = (rows // chunk + 1) * chunk
    return torch.arange(start + length, device=device)[None, :] < ends[:, None]
