"""The paper's KL curves reach the right figure under the right condition key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bebkit.reporting.kl_figures import condition_reference, load_reference_kl


def test_condition_reference_maps_convergence_and_pretrained(tmp_path: Path) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(
        json.dumps(
            {
                "KL_Pminus_vs_model_per_sentence_1to10": {
                    "chat_anti_noalign": [18.0, 9.0],
                    "chat_anti_align": [17.0, 8.0],
                    "base_anti": [6.0, 3.0],
                },
                "beta_KL_Pminus_vs_chat_INSTwrapped_per_sentence_1to15": {
                    "anti_immigration": [18.5]
                },
            }
        )
    )
    curves = load_reference_kl(ref, "anti-immigration")
    conv = condition_reference(curves, "convergence")
    assert set(conv) == {"none", "aligned"}
    np.testing.assert_array_equal(conv["none"][0], [1.0, 2.0])
    np.testing.assert_array_equal(conv["aligned"][1], [17.0, 8.0])
    pre = condition_reference(curves, "pretrained")
    assert set(pre) == {"none"} and pre["none"][1].tolist() == [6.0, 3.0]
    assert condition_reference(None, "convergence") == {}
    assert condition_reference({"beta_kl": curves["beta_kl"]}, "pretrained") == {}
