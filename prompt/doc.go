// Package prompt renders ReLLa's CTR prompts (RELLA.md section 2): a user's
// profile, a chosen part of the history as a Python list of strings, and a
// yes/no question about the target item, plus the Vicuna v1.1 wrapper, the
// answers and the SUBR item texts (section 4.1).
//
// The default wording for each dataset reproduces the authors' released
// prompts byte for byte; every line is a template that a configuration can
// change (see Options).
package prompt
