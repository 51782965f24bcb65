"""Analysis tools: FLOPs / params (fvcore and torch's FlopCounterMode), throughput, checkpoint conversion."""
from .flops import (complexity_table, count_macs_fvcore, count_macs_torch, count_params, create_model_for_size,
                    model_complexity, plot_sweep, selective_scan_macs)
from .throughput import benchmark_models, measure_throughput, plot_throughput, throughput_table

__all__ = ["complexity_table", "count_macs_fvcore", "count_macs_torch", "count_params", "create_model_for_size",
           "model_complexity", "plot_sweep", "selective_scan_macs", "benchmark_models", "measure_throughput",
           "plot_throughput", "throughput_table"]
