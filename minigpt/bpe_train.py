"""Learning BPE merges fast: count each distinct chunk once and update pair counts incrementally.

The straightforward way (minbpe's) recounts every adjacent pair of the whole
text after every merge. Here the text arrives as its distinct chunks with how
often each occurs ("the" once, weighted by its thousands of occurrences). The
chunks' tokens are linked lists, and each pair remembers where it occurs, so a
merge visits only the places of the merged pair and changes the counts of
their neighbours' pairs: even a chunk a million bytes long (a line of "=",
DNA) costs little per merge. A heap finds the most frequent pair without
scanning all pairs. Both ways learn the same merges; tests/test_tokenizer.py
checks that.
"""
import heapq
from collections import Counter, defaultdict

N_BYTES = 256   # ids 0..255 are the single bytes; the first merge makes id 256


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in `ids`, left to right, by `new_id`.

    ids: list of ints; pair: (int, int); new_id: int. Returns a new list.
    >>> merge([5, 6, 6, 7, 6, 7], (6, 7), 99)
    [5, 6, 99, 99]
    """
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(chunk_counts, n_merges):
    """Learn up to `n_merges` merges from distinct chunks, most frequent pair first.

    chunk_counts: dict chunk (str) -> number of occurrences; n_merges: int.
    Returns dict pair -> new id (256, 257, ... in the order learned). Ties go to
    the smaller pair; stops early when no adjacent pair is left.
    >>> learn_merges({"aaabdaaabac": 1}, 3)    # aa -> 256, ab -> 257, (256, 257) -> 258
    {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    """
    ids, weight, nxt, prev = _linked_chunks(chunk_counts)
    pair_counts = Counter()       # pair -> occurrences in the whole text
    where = defaultdict(list)     # pair -> positions i where (ids[i], ids[nxt[i]]) is (or was) it
    for i, j in enumerate(nxt):
        if j >= 0:
            pair = (ids[i], ids[j])
            pair_counts[pair] += weight[i]
            where[pair].append(i)
    heap = [(-count, pair) for pair, count in pair_counts.items()]   # most frequent on top
    heapq.heapify(heap)

    merges = {}
    for new_id in range(N_BYTES, N_BYTES + n_merges):
        pair = _pop_most_frequent(heap, pair_counts)
        if pair is None:
            break
        merges[pair] = new_id
        a, b = pair
        changes = Counter()       # pair -> change of its count caused by this merge
        merged = 0                # occurrences merged, weighted
        for i in sorted(set(where.pop(pair))):         # left to right, as merge() goes
            j = nxt[i]
            if ids[i] != a or j < 0 or ids[j] != b:
                continue          # merged away since (a neighbour took one of its tokens)
            w, h, k = weight[i], prev[i], nxt[j]
            merged += w
            if h >= 0:            # (left, a) becomes (left, new)
                left = ids[h]
                changes[left, a] -= w
                changes[left, new_id] += w
                where[left, new_id].append(h)
            if k >= 0:            # (b, right) becomes (new, right)
                right = ids[k]
                changes[b, right] -= w
                changes[new_id, right] += w
                where[new_id, right].append(i)
                prev[k] = i
            ids[i], ids[j], nxt[i] = new_id, -1, k      # j leaves the list
        changes[pair] -= merged
        _apply_changes(pair_counts, heap, changes)
    return merges


def _linked_chunks(chunk_counts):
    """Every chunk's bytes end to end, as linked lists: (ids, weight, nxt, prev), one entry per byte.

    weight[i]: how often the chunk holding byte i occurs; nxt[i] / prev[i]: the
    position of the next / previous token of the same chunk, -1 at its ends.
    >>> _linked_chunks({"ab": 3, "c": 1})
    ([97, 98, 99], [3, 3, 1], [1, -1, -1], [-1, 0, -1])
    """
    ids, weight, nxt, prev = [], [], [], []
    for chunk, count in chunk_counts.items():
        chunk_bytes = chunk.encode("utf-8")
        start, n = len(ids), len(chunk_bytes)
        if n == 0:
            continue
        ids += chunk_bytes
        weight += [count] * n
        nxt += range(start + 1, start + n)
        nxt.append(-1)
        prev.append(-1)
        prev += range(start, start + n - 1)
    return ids, weight, nxt, prev


def _pop_most_frequent(heap, pair_counts):
    """Pop the most frequent pair off the heap of (-count, pair), skipping stale entries.

    An entry is stale when its count is no longer the pair's count (the new
    count was pushed as another entry). Returns None when the heap runs out.
    >>> _pop_most_frequent([(-9, (2, 3)), (-5, (2, 3)), (-3, (1, 2))], {(1, 2): 3, (2, 3): 5})
    (2, 3)
    """
    while heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) == -neg_count:
            return pair
    return None


def _apply_changes(pair_counts, heap, changes):
    """Add one merge's count changes to `pair_counts` and push each new count onto the heap.

    >>> counts, heap = Counter({(1, 2): 4, (2, 3): 1}), []
    >>> _apply_changes(counts, heap, {(1, 2): -1, (2, 3): -1, (9, 3): 1})
    >>> counts, heap
    (Counter({(1, 2): 3, (9, 3): 1}), [(-3, (1, 2)), (-1, (9, 3))])
    """
    for pair, change in changes.items():
        if change:
            pair_counts[pair] += change
            if pair_counts[pair] > 0:
                heapq.heappush(heap, (-pair_counts[pair], pair))
            else:
                del pair_counts[pair]
