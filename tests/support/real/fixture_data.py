"""The data every real-artifact builder trains on (imported by the builders inside their own
environments, so it needs only NumPy and pandas)."""

from __future__ import annotations

from typing import Any


def make_data(seed: int = 0, n: int = 400) -> Any:
    """Numeric (int and float with gaps), string (with gaps) and category features; a string
    binary label, a string three-class label and a float target."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    income = rng.normal(52000, 15000, n).round(2)
    city = rng.choice(["paris", "rome", "oslo", "lima"], n).astype(object)
    plan = pd.Categorical(rng.choice(["basic", "plus", "pro"], n))
    visits = rng.poisson(4, n).astype("float64")
    df = pd.DataFrame({"age": age, "income": income, "city": city, "plan": plan, "visits": visits})
    df.loc[::17, "income"] = np.nan
    df.loc[::23, "city"] = None
    df.loc[::29, "visits"] = np.nan
    signal = (age - 45) / 12 + (np.nan_to_num(income, nan=52000) - 52000) / 20000
    signal = signal + np.where(city == "oslo", 0.8, 0.0) + rng.normal(0, 0.7, n)
    df["churned"] = np.where(signal > 0, "yes", "no")
    df["segment"] = np.select([signal < -0.6, signal < 0.6], ["low", "mid"], "high")
    df["spend"] = (200 + 40 * signal + np.nan_to_num(visits) * 7 + rng.normal(0, 5, n)).round(2)
    return df
