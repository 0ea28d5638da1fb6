"""Method-agnostic platform: config, data, training loop, sweeps, evaluation, logging.

Lives inside the `contrastlab` package (never as a top-level `platform`) because a top-level
package of that name shadows the standard library module and breaks Ray, torch and pandas.
"""
