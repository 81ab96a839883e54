"""How a decision record's packed values are compressed with its schema's dictionary
(`records`, the module docstring): zstd with a dictionary trained on a worker's first
records of the schema, and the raw deflate of the records written before it (read only).

A module of its own so that the record's layout (`records`) and its compression can each
be read whole. Part of the stored format: a record written with these settings must read
back after an upgrade."""

from __future__ import annotations

import zlib
from typing import Any, Callable

import zstandard

#: a schema's dictionary, at most (the samples' bytes it is trained on are several times more)
DICT_BYTES = 8192
#: what starts a zstd dictionary with entropy tables (`zstandard.train_dictionary`'s); a
#: dictionary that does not is raw content (`dictionary`'s fallback)
_DICT_MAGIC = b"\x37\xa4\x30\xec"
#: zstd level 3's parameters for a record (a few hundred bytes) and a dictionary of `DICT_BYTES`
#: (a 16 kB window, double-fast matching), with hash tables of 2^14 and 2^13 entries: the
#: dictionary's 8 kB positions fit them, and each schema's compressor and the cache lines a
#: record touches are a third smaller than with level 3's own. No magic number, content size,
#: checksum or dictionary id: the record's clear header names its schema.
_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    3, source_size=512, dict_size=DICT_BYTES, hash_log=14, chain_log=13, format=zstandard.FORMAT_ZSTD1_MAGICLESS,
    write_content_size=False, write_checksum=False, write_dict_id=False)
#: raw deflate's window in the records of before (8 kB: what their dictionary was cut to)
_WBITS = -13


def dictionary(samples: list[bytes]) -> bytes:
    """A zstd dictionary of a schema's sampled records (their packed values): trained
    (the bytes they repeat most, and entropy tables, which a record a few hundred bytes long
    could not pay for), or where training fails (too few samples) their last `DICT_BYTES`.
    The frequency table's 2^14 entries are plenty for samples this small (the default's
    2^20 cost milliseconds to clear)."""
    try:
        trained = zstandard.train_dictionary(DICT_BYTES, list[bytes | bytearray | memoryview](samples), f=14)
        return trained.as_bytes()
    except zstandard.ZstdError:
        raw = b"".join(samples)[-DICT_BYTES:]
        return raw[1:] if raw.startswith(_DICT_MAGIC) else raw  # read as raw content, not as a trained one


def loaded(zdict: bytes) -> zstandard.ZstdCompressionDict:
    """A schema's dictionary as zstd takes it: trained (it begins with zstd's magic number)
    or raw content. Kept per schema: loading it costs more than a record."""
    kind = zstandard.DICT_TYPE_FULLDICT if zdict.startswith(_DICT_MAGIC) else zstandard.DICT_TYPE_RAWCONTENT
    return zstandard.ZstdCompressionDict(zdict, dict_type=kind)


def compressor(zdict: bytes) -> Callable[[bytes], bytes]:
    """Compresses a record's packed values with `zdict` (one per schema, reused: the
    dictionary's tables are made once and only read per record)."""
    tables = loaded(zdict)
    tables.precompute_compress(compression_params=_PARAMS)
    return zstandard.ZstdCompressor(dict_data=tables, compression_params=_PARAMS).compress


def decompressed(data: Any, dictionary: zstandard.ZstdCompressionDict) -> bytes:
    """What `compressor` compressed, given its dictionary `loaded`; a decompressor of its
    own per call (one is not to be used by two threads at once)."""
    reader = zstandard.ZstdDecompressor(dict_data=dictionary, format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompressobj()
    return reader.decompress(data)


def inflated(data: Any, zdict: bytes) -> bytes:
    """What the deflated records of before (format ``\\x02``) held: raw deflate with `zdict`."""
    inflater = zlib.decompressobj(_WBITS, zdict=zdict)
    return inflater.decompress(data) + inflater.flush()
