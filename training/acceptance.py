"""The acceptance rule of greedy decoding, as cllm's decoding core applies it (runtime/acceptance.h):
the one copy in training/. tests/test_acceptance.py holds it equal to the C++ rule on random blocks.

A block forwards tokens g[0..n) (g[0] final) and gets y[i], the argmax after g[0..i]. Its main run is
the rows at their own cache row (rows[i] = (pos + i, base)); the rows after it are verification
branches: runs of rows with one base whose positions count up from base, each continuing the main
row at position base - 1 (its root). The decision is the longest accepted path."""


def accept_length(g, y):
    """The largest m < len(g) with g[j] == y[j-1] for j in 1..m: g[0..m] final, y[m] next."""
    m = 0
    while m + 1 < len(g) and g[m + 1] == y[m]:
        m += 1
    return m


def first_mismatch(state, target):
    """First j with state[j] != target[j], or None when equal: the tokens before it already hold
    their fixed-point values (the positions a consistency loss leaves out). Works on lists,
    numpy arrays and torch tensors."""
    for j in range(len(state)):
        if state[j] != target[j]:
            return j
    return None


def main_rows(n, pos, rows):
    if rows is None:
        return n
    k = 0
    while k < n and rows[k][0] == pos + k:
        k += 1
    return k


def verify_block(tokens, y, pos, rows=None):
    """dict(branch, first_row, root, accepted); branch -1: the main run. Ties go to the main run,
    then to the earlier branch; a branch counts only if its root is accepted on the main run.
    Raises ValueError for a row that neither continues the main run nor starts a branch on it."""
    n = len(tokens)
    main = main_rows(n, pos, rows)
    if main < 1:
        raise ValueError(f"a verified block starts with a row at its own position {pos}")
    main_m = accept_length(tokens[:main], y[:main])
    best = dict(branch=-1, first_row=-1, root=0, accepted=main_m)
    i, b = main, 0
    while i < n:
        base = rows[i][1]
        root = base - 1 - pos
        if rows[i][0] != base or not 0 <= root < main:
            raise ValueError(f"row {i} neither continues the main run nor starts a branch rooted on it")
        length = 1
        while i + length < n and rows[i + length][1] == base and rows[i + length][0] == base + length:
            length += 1
        if root <= main_m:
            m = root + accept_length([tokens[root]] + list(tokens[i:i + length]), [y[root]] + list(y[i:i + length]))
            if m > best["accepted"]:
                best = dict(branch=b, first_row=i, root=root, accepted=m)
        i += length
        b += 1
    return best


def accepted_sources(v, guesses, frontier):
    """dict(block, later, candidate): where the accepted path's tokens 1..m came from. The main run's
    first `guesses` rows are the Jacobi guesses, the first `frontier` of them the frontier block (the
    rest: later blocks of multi-block); the others are the winning candidate's rows."""
    if not 1 <= frontier <= guesses:
        raise ValueError(f"the frontier block ({frontier} rows) must lie in the {guesses} guesses")
    from_guesses = v["root"] if v["branch"] >= 0 else min(v["accepted"], guesses - 1)
    block = min(from_guesses, frontier - 1)
    return dict(block=block, later=from_guesses - block, candidate=v["accepted"] - from_guesses)


def verdict_tokens(v, tokens, y):
    """The newly final tokens: the accepted path after its first token, then the next prediction."""
    if v["branch"] < 0:
        return list(tokens[1:v["accepted"] + 1]) + [y[v["accepted"]]]
    k = v["accepted"] - v["root"]
    first = v["first_row"]
    return list(tokens[1:v["root"] + 1]) + list(tokens[first:first + k]) + [y[first + k - 1]]
