"""False-alarm count of the drift monitor's feature rule on the embedded data (issue 14): for every quarter end
2000-2022, the last `drift.recent_sessions` sessions against all history up to 20 sessions before them; prints the
number of features each rule flags per quarter (median, mean, share of quarters with any breach, last quarter) and the
features that still ring. Run: `PYTHONPATH=. python bench/drift_thresholds.py` (about 2 minutes on one core)."""
import pandas as pd
from statsmodels.stats.multitest import multipletests

from trading_lib.analytics.drift import ks, psi
from trading_lib.config import load_settings
from trading_lib.data.sources import load_market
from trading_lib.features import build_dataset

s = load_settings(); d = s.drift; R = d.recent_sessions
f = build_dataset(load_market(s), s)[0].drop(columns=["vix", "vix_chg_20"])  # no VIX in the embedded source
ts = f.index.get_level_values("timestamp"); dates = ts.unique().sort_values()
rows = []
for q in pd.date_range("2000-01-01", "2023-01-01", freq="QS", tz="UTC")[1:]:
    i = int(dates.searchsorted(q)) - 1
    tr, rc = f[ts <= dates[i - R - 20]], f[(ts >= dates[i - R + 1]) & (ts <= dates[i])]
    for c in f.columns:
        a, b = tr[c].dropna().to_numpy(), rc[c].dropna().to_numpy()
        if len(a) >= 30 and len(b) >= 30: rows.append(dict(end=dates[i], feature=c, psi=psi(a, b, d.bins), D=ks(a, b)[0], p=ks(a, b)[1]))
h = pd.DataFrame(rows)
h["p_adj"] = h.groupby("end")["p"].transform(lambda p: multipletests(p, method=d.ks_correction)[1])
rules = {"former: PSI > 0.25 or (D > 0.30 and p < 0.01)": (h.psi > 0.25) | ((h.D > 0.30) & (h.p < 0.01)),
         f"settings: PSI > {d.psi_max} and D > {d.ks_min_d} and {d.ks_correction} p < {d.ks_alpha}":
             (h.psi > d.psi_max) & (h.D > d.ks_min_d) & (h.p_adj < d.ks_alpha)}
print(f"{h.end.nunique()} quarterly windows, {h.feature.nunique()} features")
for name, b in rules.items():
    n = b.groupby(h.end).sum()
    print(f"{name}: per quarter median {n.median():.0f}, mean {n.mean():.2f}, any breach in {(n > 0).mean():.0%} of quarters, "
          f"last quarter {n.iloc[-1]}")
    print("   share of quarters each feature breaches:", b.groupby(h.feature).mean().round(2)[lambda x: x > 0.05].sort_values(ascending=False).to_dict())
