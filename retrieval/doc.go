// Package retrieval implements ReLLa's semantic user behaviour retrieval
// (SUBR, RELLA.md section 4) and the ReiT training mix (section 5): item
// embedding and vector stores, PCA, per-sample top-K history selection by
// similarity to the target item, persisted selections, and the mixed
// recency/SUBR training set.
package retrieval
