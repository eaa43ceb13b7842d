"""Run every benchmark (the numbers recorded in docs/BENCHMARKS.md). `make benchmark`."""

from __future__ import annotations

from benchmarks import bench_generate_train, bench_predict, bench_score, bench_spark

if __name__ == "__main__":
    bench_generate_train.main()
    bench_predict.main()
    bench_score.main([1_000_000, 5_000_000])
    bench_spark.main([1_000_000, 5_000_000])
