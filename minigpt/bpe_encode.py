"""Applying learned BPE merges to one chunk in O(n log n): a heap over a linked list of tokens.

The readable way (`BPETokenizer.encode_and_show_work`, minbpe's) looks at every
adjacent pair to find the lowest-ranked one, merges it, and starts again: a
chunk of n bytes costs up to n scans of n pairs. That is fine for words, but
a chunk can be a million characters long (minified code, base64, a line of
"=", DNA): n^2 is then hours. Here the tokens form a linked list, and the
positions of the pairs that can merge are kept by rank, with a heap of the
ranks: take the lowest rank, merge its pairs left to right (each joins two list
nodes and notes the at most two new pairs it makes with its neighbours, whose
ranks are always higher), and skip the positions whose pair has changed since
they were noted. Same order of merges, so the same ids: lowest rank first, and
of equal ranks the leftmost.

`ChunkCache` keeps each chunk's ids, so a chunk that repeats is merged once.
"""
from array import array
from heapq import heapify, heappop, heappush
from itertools import repeat

# Below this many tokens a chunk is merged by rescanning a list of pair ranks
# instead: no linked list to build, and faster for the words most chunks are.
# Measured here on 300 slices of shakespeare.txt without spaces: the two take
# the same time at 48-64 bytes; at 128 the list takes 1.7x as long, at 24 the
# buckets 2.7x.
SHORT_CHUNK = 64
NEVER = (1 << 30) - 1    # the rank of a pair that never merges: above any id (and a one-digit int: fast)


def merge_by_rank(ids, merges):
    """Apply `merges` to `ids` until none applies, always the lowest-ranked pair first.

    ids: list of ints (may be changed in place); merges: dict pair -> new id,
    the id being the rank (ties go to the leftmost pair). Returns the merged list.
    >>> merge_by_rank([1, 2, 3], {(1, 2): 4, (4, 3): 5, (2, 3): 6})
    [5]
    >>> merge_by_rank([7] * 5, {(7, 7): 8, (8, 8): 9})     # 77 77 7 -> 8 8 7 -> 9 7
    [9, 7]
    """
    if len(ids) < SHORT_CHUNK:
        return _merge_short(ids, merges)
    get = merges.get
    n = len(ids)
    nxt = list(range(1, n + 1))                    # nxt[i]: the token after i (n: none)
    prev = list(range(-1, n - 1))                  # prev[i]: the token before i (-1: none)
    at = {}                                        # rank -> positions i where (ids[i], ids[nxt[i]]) had it
    for i, rank in enumerate(map(get, zip(ids, ids[1:]))):
        if rank is not None:
            at.setdefault(rank, []).append(i)
    ranks = list(at)                               # a heap of the ranks in `at`
    heapify(ranks)
    while ranks:
        rank = heappop(ranks)                      # the lowest rank left; a merge makes only higher ones
        for i in sorted(at.pop(rank)):             # its pairs, leftmost first
            j = nxt[i]
            if j == n or get((ids[i], ids[j])) != rank:
                continue                           # stale: a neighbour merged since
            ids[i], ids[j] = rank, -1              # i becomes the merged token; j leaves the list
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prev[k] = i
                right = get((rank, ids[k]))
                if right is not None:              # the new pair with the right neighbour
                    if right not in at:
                        at[right] = []
                        heappush(ranks, right)
                    at[right].append(i)
            h = prev[i]
            if h >= 0:
                left = get((ids[h], rank))
                if left is not None:               # and with the left one
                    if left not in at:
                        at[left] = []
                        heappush(ranks, left)
                    at[left].append(h)
    return [t for t in ids if t >= 0]


def _merge_short(ids, merges):
    """merge_by_rank for a few tokens: rescan a list of the pairs' ranks after each merge.

    ranks[i] is the rank of (ids[i], ids[i+1]); a merge at i changes only the
    ranks of its two neighbours.
    >>> _merge_short([1, 2, 3], {(1, 2): 4, (4, 3): 5, (2, 3): 6})
    [5]
    """
    never = NEVER
    get = merges.get
    ranks = list(map(get, zip(ids, ids[1:]), repeat(never)))
    while ranks:
        new_id = min(ranks)
        if new_id == never:
            break
        i = ranks.index(new_id)                    # the leftmost occurrence of the best pair
        ids[i:i + 2] = [new_id]
        del ranks[i]
        if i > 0:
            ranks[i - 1] = get((ids[i - 1], new_id), never)
        if i < len(ranks):
            ranks[i] = get((new_id, ids[i + 1]), never)
    return ids


class ChunkCache(dict):
    """chunk (str) -> its ids packed in bytes, a chunk being encoded the first time it is looked up.

    `ids(chunks)` both finds the new chunks and joins every chunk's ids in one pass:
    a chunk already seen costs one lookup in C (most chunks of a text repeat:
    shakespeare.txt's 300,000 are 15,000 distinct), and only a miss runs Python.
    Bytes, not lists of ints: joining bytes is one C call, and bytes are no work for
    Python's garbage collector, which would otherwise scan the growing lists many times.
    merges: dict pair -> new id; byte_table: bytes.translate table byte -> its id;
    token_of: dict bytes -> the token that is those bytes.
    >>> cache = ChunkCache({(104, 105): 256}, bytes(range(256)), {b"h": 104, b"i": 105})
    >>> cache.ids(["hi", "i", "hi"]), sorted(cache)
    ([256, 105, 256], ['hi', 'i'])
    """
    ID_TYPE = "I"        # array typecode of a packed id: unsigned int (only its range matters)

    def __init__(self, merges, byte_table, token_of):
        super().__init__()
        self.merges, self.byte_table, self.token_of = merges, byte_table, token_of

    def ids(self, chunks):
        """All the chunks' ids, one after another, as a list of ints."""
        return memoryview(b"".join(map(self.__getitem__, chunks))).cast(self.ID_TYPE).tolist()

    def __missing__(self, chunk):
        """Encode a new chunk: its bytes, merged lowest rank first; keep and return its ids.

        A chunk that is itself a token becomes that token at once, as in tiktoken.
        This only saves time, because a token's bytes merge back into that token:
        a token we train does, since its bytes merge alone as they did inside the
        chunks it was learned from; every GPT-2 token does, as a test checks.
        """
        chunk_bytes = chunk.encode("utf-8")
        token = self.token_of.get(chunk_bytes)
        if token is not None:
            ids = [token]
        else:
            ids = merge_by_rank(list(chunk_bytes.translate(self.byte_table)), self.merges)
        packed = self[chunk] = array(self.ID_TYPE, ids).tobytes()
        return packed
