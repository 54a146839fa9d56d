// The acceptance rule of greedy decoding, written once (design.md, "Jacobi decoding (greedy): the
// contract" and "More tokens per forward"). The decoders (AR, Jacobi, lookahead), the trajectory
// collector and the convergence vote of a tensor-parallel group all call it; training/acceptance.py
// mirrors it and training/tests/test_acceptance.py holds the two equal on random blocks (through
// tests/tools/accept_verdicts.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/types.h"

namespace cllm {

// g[0..n): tokens forwarded causally, g[0] final; y[i]: the argmax after g[0..i]. Returns the
// largest m < n with g[j] == y[j-1] for all j in 1..m: g[0..m] are final and y[m] is the next token.
int accept_length(const int32_t* g, const int32_t* y, int n);

// What one block's forward decided. The block's rows are its main run (the rows at their own cache
// row: rows[i].pos == pos + i, or all rows when `rows` is null), then any verification branches: a
// branch is a run of rows with one base whose positions count up from base; it continues the main
// row at position base - 1 (its root). A branch counts only if its root is accepted on the main run.
struct Verdict {
  int branch = -1;     // -1: the main run won; else the index of the winning branch (in row order)
  int first_row = -1;  // the winning branch's first row
  int root = 0;        // the main row the accepted path leaves the main run at (the branch's root)
  int accepted = 0;    // m: tokens accepted after the block's first token
};

// The longest accepted path: the main run's accept_length, or root + the accept_length of a branch
// (its root token, then its rows). Ties go to the main run, then to the earlier branch. Throws,
// naming the row, when the layout is not a main run followed by branches rooted on it.
Verdict verify_block(const int32_t* tokens, const int32_t* y, int n, int pos, const RowSpec* rows);

// The tokens that became final: the block's first token excluded, the next token included
// (the accepted path's tokens 1..m, then the prediction after its last one).
std::vector<int32_t> verdict_tokens(const Verdict& v, const int32_t* tokens, const int32_t* y);

// Where a verdict's accepted tokens (the path's tokens 1..m) came from. The main run's first
// `guesses` rows are the Jacobi guesses, the first `frontier` of them the frontier block (with
// multi-block, the rest are later blocks); main rows past the guesses (a one-token block's first
// candidate, laid out causally) and branch rows are a candidate's.
struct Sources {
  int block = 0;      // frontier block's guesses
  int later = 0;      // later blocks' guesses
  int candidate = 0;  // the winning candidate's rows
};
Sources accepted_sources(const Verdict& v, int guesses, int frontier);

// The main run's length: rows[i].pos == pos + i for i < the result (n when rows is null).
int main_rows(int n, int pos, const RowSpec* rows);

}  // namespace cllm
