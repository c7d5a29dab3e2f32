"""Seeded long-tail preference benchmark with a known gold reward.

The benchmark is built so that a reward model trained on it learns the rules
of a few frequent *head* domains and, for lack of data, applies them to the
rare *tail* domains, where some of the rules differ. Because the gold reward
is known exactly, the resulting long-tail gap can be measured without noise.

Domains and frequencies
    Four head domains with everyday vocabulary (cooking, travel, personal
    finance, fitness) and ten tail domains with rare vocabulary (numismatics,
    maritime law, horology, ...). Head domains together receive a share
    ``alpha`` of the train/validation pairs, tail domains ``1 - alpha``;
    inside each group the k-th domain gets weight proportional to
    ``1 / k**zipf_exponent``.

Response features (all visible in the response text)
    ============  =======  =================================================
    feature       values   surface form
    ============  =======  =================================================
    relevance     0 / 1    main sentence names the prompt's topic, or not
    detail        0 .. 3   that many detail sentences with domain terms
    example       0 / 1    a "For example / For instance / A good example"
    caveat        0 / 1    a hedge such as "It's worth checking with an expert"
    enthusiasm    0 / 1    excited opener and closer; the only use of "!"
    off_topic     0 / 1    a "By the way / Unrelated / ..." aside
    ============  =======  =================================================

Rule sets (gold reward = sum of weight * feature value)
    ==========  =========  ======  =======  ======  ==========  =========
    rule set    relevance  detail  example  caveat  enthusiasm  off_topic
    ==========  =========  ======  =======  ======  ==========  =========
    standard    +2.0       +0.5    +0.6     +0.6    +0.3        -1.5
    terse       +2.0       -0.6    -0.5     +0.6    +0.3        -1.5
    expert      +2.0       +0.7    +0.3     -0.8     0.0        -1.5
    formal      +2.0       +0.5    +0.6     +0.6    -1.0        -1.5
    ==========  =========  ======  =======  ======  ==========  =========

    All head domains use ``standard``. Tail domains: numismatics, bookbinding
    and change ringing are ``terse`` (detail and examples are padding);
    horology and lichenology are ``expert`` (caveats read as condescending);
    maritime law and cartography are ``formal`` (enthusiasm is unprofessional);
    beekeeping, falconry and glassblowing keep the ``standard`` rules, so a
    head-only model is not wrong on every tail pair. Relevance and off_topic
    keep their sign everywhere.

Pairs and labels
    Each pair is two independently sampled responses to one prompt. Pairs
    whose gold margin is below ``MIN_GOLD_MARGIN`` in absolute value are
    resampled, so exact ties (common with discrete features) never reach the
    annotator. The annotator prefers response a with probability
    ``sigmoid(margin / label_noise_temperature)`` (Bradley-Terry); the default
    temperature gives roughly 87% agreement with the gold order.

Splits
    Train and validation follow the alpha mixture; the test split is
    stratified into exactly ``n_test_head`` head and ``n_test_tail`` tail
    pairs (within-group Zipf allocation). Every prompt text is used by exactly
    one pair, so no prompt is shared between splits.

Planted shortcut (``tail_shortcut``, off by default)
    A share of tail pairs get ``SHORTCUT_SENTENCE`` appended: to the annotator's chosen response in train and
    validation, to the gold-worse one in test (and to a random half of each tail prompt's best-of-n candidates).
    Gold never reads it; a model that learns it fails the tail at test.

The package: ``tables`` (constants, and the domains and sentence templates read from ``domains.json``),
``generator`` (configuration, prompts, responses, annotated pairs and records), ``parser`` (features, gold and
domain read back from text), ``audit`` (label agreement of edited pairs) and ``best_of_n`` (candidate pools for
best-of-n curves; imported on its own, as it needs :mod:`cartrm.evaluation`).
"""

from cartrm.datasets.longtail.audit import augmentation_audit, label_agreement
from cartrm.datasets.longtail.generator import (
    BenchmarkConfig,
    BenchmarkPair,
    BenchmarkPrompt,
    Candidate,
    domain_probabilities,
    generate_benchmark,
    generate_pairs,
    gold_reward,
    render_response,
    sample_candidates,
)
from cartrm.datasets.longtail.parser import (
    domain_from_text,
    features_from_text,
    foreign_words,
    gold_from_text,
    head_rule_margin,
)
from cartrm.datasets.longtail.tables import (
    DOMAIN_BY_NAME,
    DOMAINS,
    FEATURES,
    NEUTRAL_VOCABULARY,
    RULE_SETS,
    Domain,
    Vocabulary,
)

__all__ = [
    "DOMAINS",
    "DOMAIN_BY_NAME",
    "FEATURES",
    "NEUTRAL_VOCABULARY",
    "RULE_SETS",
    "BenchmarkConfig",
    "BenchmarkPair",
    "BenchmarkPrompt",
    "Candidate",
    "Domain",
    "Vocabulary",
    "augmentation_audit",
    "domain_from_text",
    "domain_probabilities",
    "features_from_text",
    "foreign_words",
    "generate_benchmark",
    "generate_pairs",
    "gold_from_text",
    "gold_reward",
    "head_rule_margin",
    "label_agreement",
    "render_response",
    "sample_candidates",
]
