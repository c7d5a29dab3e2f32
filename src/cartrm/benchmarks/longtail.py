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
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pydantic

FEATURES: tuple[str, ...] = ("relevance", "detail", "example", "caveat", "enthusiasm", "off_topic")
MAX_DETAIL = 3
FEATURE_PROBABILITIES: dict[str, float] = {
    "relevance": 0.75,
    "example": 0.5,
    "caveat": 0.5,
    "enthusiasm": 0.5,
    "off_topic": 0.25,
}
MIN_GOLD_MARGIN = 0.25
SPLITS: tuple[str, ...] = ("train", "validation", "test")

RULE_SETS: dict[str, dict[str, float]] = {
    "standard": {"relevance": 2.0, "detail": 0.5, "example": 0.6, "caveat": 0.6, "enthusiasm": 0.3, "off_topic": -1.5},
    "terse": {"relevance": 2.0, "detail": -0.6, "example": -0.5, "caveat": 0.6, "enthusiasm": 0.3, "off_topic": -1.5},
    "expert": {"relevance": 2.0, "detail": 0.7, "example": 0.3, "caveat": -0.8, "enthusiasm": 0.0, "off_topic": -1.5},
    "formal": {"relevance": 2.0, "detail": 0.5, "example": 0.6, "caveat": 0.6, "enthusiasm": -1.0, "off_topic": -1.5},
}
HEAD_RULE_SET = "standard"


@dataclass(frozen=True)
class Domain:
    """A topical domain: its frequency group, gold rule set and vocabulary.

    ``topics`` name what a prompt asks about, ``objects`` fill prompts and
    example sentences, ``terms`` fill detail sentences and ``verbs`` (bare
    infinitive phrases) fill caveat sentences.
    """

    name: str
    is_tail: bool
    rule_set: str
    topics: tuple[str, ...]
    objects: tuple[str, ...]
    terms: tuple[str, ...]
    verbs: tuple[str, ...]


DOMAINS: tuple[Domain, ...] = (
    Domain(
        "cooking",
        False,
        "standard",
        topics=(
            "sourdough bread",
            "braising beef",
            "homemade pasta",
            "roasting vegetables",
            "stir-frying",
            "baking cookies",
            "making soup stock",
            "grilling chicken",
        ),
        objects=(
            "a cast-iron skillet",
            "a stand mixer",
            "a slow cooker",
            "a chef's knife",
            "a baking tray",
            "a stockpot",
            "a wok",
            "a rice cooker",
        ),
        terms=(
            "oven temperature",
            "salt level",
            "resting period",
            "cooking time",
            "chopping technique",
            "spice mix",
            "pan heat",
            "dough texture",
        ),
        verbs=("cook for guests", "try a new recipe", "change the recipe", "use a very hot pan"),
    ),
    Domain(
        "travel",
        False,
        "standard",
        topics=(
            "packing light",
            "booking cheap flights",
            "train travel in Europe",
            "planning a road trip",
            "visiting national parks",
            "staying in hostels",
            "beating jet lag",
            "travelling with kids",
        ),
        objects=(
            "a carry-on suitcase",
            "a rail pass",
            "a travel pillow",
            "a packing cube",
            "a phone charger",
            "a rental car",
            "a daypack",
            "a hotel booking",
        ),
        terms=(
            "baggage allowance",
            "layover length",
            "booking window",
            "seat choice",
            "visa requirements",
            "local transport",
            "check-in deadline",
            "daily itinerary",
        ),
        verbs=("book anything", "travel abroad", "buy tickets", "drive in another country"),
    ),
    Domain(
        "personal_finance",
        False,
        "standard",
        topics=(
            "building an emergency fund",
            "paying off credit cards",
            "saving for retirement",
            "making a monthly budget",
            "index fund investing",
            "improving a credit score",
            "buying a first home",
            "cutting grocery bills",
        ),
        objects=(
            "a budgeting app",
            "a savings account",
            "a spreadsheet",
            "a credit card",
            "a paycheck",
            "a retirement account",
            "a bank statement",
            "a debit card",
        ),
        terms=(
            "interest rate",
            "monthly spending",
            "account fees",
            "tax deduction",
            "savings rate",
            "repayment plan",
            "cash buffer",
            "expense tracking",
        ),
        verbs=("move money", "sign any contract", "take on debt", "invest your savings"),
    ),
    Domain(
        "fitness",
        False,
        "standard",
        topics=(
            "running a first 5k",
            "strength training",
            "stretching after workouts",
            "home workouts",
            "losing weight safely",
            "building core strength",
            "cycling to the office",
            "swimming laps",
        ),
        objects=(
            "a pair of running shoes",
            "a set of dumbbells",
            "a yoga mat",
            "a kettlebell",
            "a resistance band",
            "a fitness tracker",
            "a gym membership",
            "a foam roller",
        ),
        terms=(
            "warm-up routine",
            "rest days",
            "workout pace",
            "lifting form",
            "protein intake",
            "heart rate",
            "sleep schedule",
            "exercise plan",
        ),
        verbs=("lift heavy", "push hard", "exercise daily", "run long distances"),
    ),
    Domain(
        "numismatics",
        True,
        "terse",
        topics=(
            "grading Roman denarii",
            "identifying Byzantine solidi",
            "spotting die varieties",
            "cataloguing hammered coinage",
            "authenticating Greek tetradrachms",
            "collecting medieval groats",
            "valuing Victorian sovereigns",
            "studying mint errors",
        ),
        objects=(
            "a jeweller's loupe",
            "digital calipers",
            "a coin cabinet",
            "a mylar flip",
            "a Sheldon grading chart",
            "an auction catalogue",
            "a precision balance",
            "a cotton glove",
        ),
        terms=(
            "obverse legend",
            "reverse exergue",
            "strike quality",
            "die axis",
            "patina",
            "edge reeding",
            "flan diameter",
            "toning",
        ),
        verbs=("clean a coin", "submit coins for slabbing", "bid at auction", "handle uncirculated pieces"),
    ),
    Domain(
        "maritime_law",
        True,
        "formal",
        topics=(
            "salvage claims",
            "maritime liens",
            "charterparty disputes",
            "general average",
            "collision liability",
            "seafarers' wage claims",
            "cargo damage claims",
            "arresting a ship",
        ),
        objects=(
            "a bill of lading",
            "a charterparty",
            "a marine survey report",
            "a notice of readiness",
            "a deck log",
            "a salvage agreement",
            "an admiralty writ",
            "a ship's manifest",
        ),
        terms=(
            "tonnage limitation",
            "Hague-Visby regime",
            "demurrage",
            "laytime",
            "jurisdiction clause",
            "in rem action",
            "salvage award",
            "governing statute",
        ),
        verbs=("arrest a vessel", "execute a charter", "accept a settlement", "declare general average"),
    ),
    Domain(
        "horology",
        True,
        "expert",
        topics=(
            "servicing a lever escapement",
            "regulating a mechanical watch",
            "restoring a longcase clock",
            "replacing a mainspring",
            "demagnetising a movement",
            "adjusting beat error",
            "cleaning a fusee",
            "polishing pivots",
        ),
        objects=(
            "a timegrapher",
            "a staking tool",
            "a demagnetiser",
            "a pivot burnisher",
            "a movement holder",
            "an oiler",
            "a crystal press",
            "a case opener",
        ),
        terms=(
            "balance amplitude",
            "hairspring",
            "pallet fork",
            "jewel bearing",
            "isochronism",
            "escape wheel",
            "lubricant selection",
            "dial washer",
        ),
        verbs=("open the caseback", "oil the pivots", "let down the mainspring", "unscrew the balance cock"),
    ),
    Domain(
        "beekeeping",
        True,
        "standard",
        topics=(
            "inspecting a hive",
            "preventing swarms",
            "treating varroa mites",
            "overwintering a colony",
            "harvesting honey",
            "requeening a colony",
            "feeding syrup in autumn",
            "splitting a colony",
        ),
        objects=(
            "a smoker",
            "a hive tool",
            "a bee suit",
            "a queen excluder",
            "a frame feeder",
            "a honey extractor",
            "a nucleus box",
            "a veil",
        ),
        terms=(
            "brood pattern",
            "queen cells",
            "drone comb",
            "nectar flow",
            "propolis",
            "worker bees",
            "varroa count",
            "supers",
        ),
        verbs=("open a hive", "relocate a colony", "handle frames", "puff the smoker"),
    ),
    Domain(
        "bookbinding",
        True,
        "terse",
        topics=(
            "sewing signatures",
            "rounding and backing",
            "constructing a case binding",
            "Coptic stitch binding",
            "marbling endpapers",
            "paring leather",
            "tooling gilt titles",
            "repairing a spine",
        ),
        objects=(
            "a bone folder",
            "a sewing frame",
            "a lying press",
            "a Scharf-Fix parer",
            "a backing hammer",
            "a finishing stove",
            "an awl",
            "a bookcloth sample",
        ),
        terms=("grain direction", "kettle stitch", "headband", "mull", "wheat paste", "squares", "hinge", "text block"),
        verbs=("glue up the spine", "cut the boards", "pare the leather", "sew the sections"),
    ),
    Domain(
        "falconry",
        True,
        "standard",
        topics=(
            "manning a Harris hawk",
            "entering a young goshawk",
            "flying a peregrine to the lure",
            "weathering a merlin",
            "imping broken feathers",
            "hooding a passage falcon",
            "managing a hawk's condition",
            "flying at quarry",
        ),
        objects=(
            "a leather gauntlet",
            "a swivel and leash",
            "a creance line",
            "a bow perch",
            "a falconry hood",
            "a lure pad",
            "a telemetry transmitter",
            "an Aylmeri anklet",
        ),
        terms=("jesses", "mews", "crop", "tiercel", "bating", "hack", "casting", "yarak"),
        verbs=("fly a bird free", "handle raptors", "hood the bird", "enter a hawk"),
    ),
    Domain(
        "lichenology",
        True,
        "expert",
        topics=(
            "identifying crustose lichens",
            "spot tests with reagents",
            "collecting foliose specimens",
            "surveying epiphytes",
            "keying out Cladonia",
            "reading thallus chemistry",
            "monitoring air pollution with lichens",
            "photographing apothecia",
        ),
        objects=(
            "a hand lens",
            "a microscope",
            "a vial of K reagent",
            "a specimen packet",
            "a dichotomous key",
            "a field notebook",
            "a UV torch",
            "a herbarium folder",
        ),
        terms=("soredia", "isidia", "photobiont", "rhizines", "cortex", "medulla", "ascospores", "prothallus"),
        verbs=("apply spot reagents", "collect from protected sites", "section a specimen", "scrape bark"),
    ),
    Domain(
        "cartography",
        True,
        "formal",
        topics=(
            "choosing a map projection",
            "drawing contour lines",
            "generalising coastlines",
            "placing map labels",
            "hillshading terrain",
            "choropleth classification",
            "georeferencing old charts",
            "designing a legend",
        ),
        objects=(
            "a topographic survey",
            "a gazetteer",
            "a digital elevation model",
            "a stereographic projection",
            "a scale bar",
            "a colour ramp",
            "a graticule",
            "a basemap",
        ),
        terms=(
            "geodetic datum",
            "projection distortion",
            "figure-ground contrast",
            "classification breaks",
            "contour interval",
            "generalisation tolerance",
            "symbol hierarchy",
            "typographic weighting",
        ),
        verbs=("publish a map", "reproject the data", "release a chart", "reclassify the data"),
    ),
    Domain(
        "glassblowing",
        True,
        "standard",
        topics=(
            "gathering from the furnace",
            "shaping a goblet stem",
            "annealing paperweights",
            "blowing a bubble",
            "colour overlay techniques",
            "crafting murrine",
            "pulling cane",
            "blocking a gather",
        ),
        objects=(
            "a blowpipe",
            "glassworking jacks",
            "a steel marver",
            "a punty rod",
            "a cherrywood block",
            "a glory hole",
            "an annealer",
            "a graphite paddle",
        ),
        terms=(
            "glass viscosity",
            "annealing point",
            "expansion coefficient",
            "jack line",
            "gather size",
            "marvering",
            "punty mark",
            "thermal shock",
        ),
        verbs=("approach the furnace", "crack off a piece", "handle molten glass", "reheat in the glory hole"),
    ),
    Domain(
        "change_ringing",
        True,
        "terse",
        topics=(
            "ringing Plain Bob",
            "learning Grandsire Triples",
            "handling a tower bell",
            "calling a quarter peal",
            "ringing call changes",
            "learning Stedman",
            "striking accurately in a peal",
            "conducting touches",
        ),
        objects=(
            "a tenor bell",
            "a method sheet",
            "a handbell",
            "a rope sally",
            "a ringing simulator",
            "a blue line diagram",
            "a stay and slider",
            "a peal board",
        ),
        terms=(
            "place notation",
            "hunt bell",
            "dodging",
            "backstroke",
            "handstroke",
            "lead end",
            "coursing order",
            "treble",
        ),
        verbs=("ring a large bell", "ring unsupervised", "handle a bell rope", "catch the sally"),
    ),
)
DOMAIN_BY_NAME: dict[str, Domain] = {d.name: d for d in DOMAINS}

PROMPT_QUESTIONS = (
    "What should I know about {topic}?",
    "Can you give me some advice on {topic}?",
    "I'm getting into {topic}. Where should I start?",
    "Any practical tips for {topic}?",
    "How do I get better at {topic}?",
    "I keep struggling with {topic}. What am I missing?",
)
PROMPT_CONTEXTS = (
    "I'm a complete beginner.",
    "I've dabbled a little before.",
    "I only have weekends free.",
    "I'm on a tight budget.",
    "A friend recommended asking here.",
    "I want to avoid the usual mistakes.",
    "I'd like to do this properly.",
    "I don't have much space at home.",
)
PROMPT_SITUATIONS = (
    "Right now I have {object} to work with.",
    "I just picked up {object}.",
    "I was told to get {object} first.",
)

ENTHUSIASTIC_OPENERS = ("Great question!", "Oh, I love this topic!", "What a fun question!", "Happy to help!")
PLAIN_OPENERS = ("", "Sure.", "Here is my advice.", "Here is how I'd approach it.")
RELEVANT_MAINS = (
    "With {topic}, start simple and build up slowly.",
    "The main thing with {topic} is careful preparation.",
    "Patience pays off more than anything with {topic}.",
    "Progress in {topic} comes from deliberate practice.",
)
GENERIC_MAINS = (
    "Start simple and build up slowly.",
    "The main thing is careful preparation.",
    "Patience pays off more than anything here.",
    "Progress comes from deliberate practice.",
)
BASE_SENTENCES = (
    "Keep notes on what you try so you can compare.",
    "Short, regular sessions work better than one big push.",
    "Change one thing at a time and see what happens.",
)
DETAIL_SENTENCES = (
    "Watch the {term} closely.",
    "Get the {term} right early on.",
    "Much depends on the {term}.",
    "Check the {term} at each stage.",
    "Understand the {term} before moving on.",
)
EXAMPLE_SENTENCES = (
    "For example, start with {object}.",
    "For instance, many people begin with {object}.",
    "A good example is practising with {object}.",
    "For example, try it with {object}.",
)
EXAMPLE_MARKERS = ("For example", "For instance", "A good example")
CAVEAT_SENTENCES = (
    "It's worth checking with an expert before you {verb}.",
    "Be careful and get proper guidance before you {verb}.",
    "Please double-check the specifics before you {verb}.",
    "Ask an experienced person if you are unsure how to {verb}.",
)
CAVEAT_MARKERS = ("checking with an expert", "get proper guidance", "double-check", "an experienced person")
OFF_TOPIC_SENTENCES = (
    "By the way, my neighbour just painted their fence bright green.",
    "Unrelated, but the weather has been lovely for walks lately.",
    "On a different note, I just finished a jigsaw puzzle of a lighthouse.",
    "Side note: my cat now sleeps in the laundry basket.",
)
OFF_TOPIC_MARKERS = ("By the way", "Unrelated, but", "On a different note", "Side note")
ENTHUSIASTIC_CLOSERS = ("Have fun with it!", "Enjoy the process!", "You've got this!", "Good luck!")
PLAIN_CLOSERS = ("Hope this helps.", "Good luck.", "I hope that is useful.")


class BenchmarkConfig(pydantic.BaseModel):
    """Sizes, mixture and noise of one benchmark instance."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    n_train: int = pydantic.Field(3000, ge=0, description="training pairs")
    n_validation: int = pydantic.Field(500, ge=0, description="validation pairs")
    n_test_head: int = pydantic.Field(1100, ge=0, description="head pairs in the test split")
    n_test_tail: int = pydantic.Field(1100, ge=0, description="tail pairs in the test split")
    alpha: float = pydantic.Field(0.9, gt=0.0, lt=1.0, description="share of head-domain pairs in train/validation")
    zipf_exponent: float = pydantic.Field(1.0, ge=0.0, description="Zipf exponent of domain frequencies in a group")
    label_noise_temperature: float = pydantic.Field(
        0.6, gt=0.0, description="annotator noise: P(label agrees) = sigmoid(gold margin / temperature)"
    )
    seed: int = pydantic.Field(0, ge=0, description="generator seed")


@dataclass(frozen=True)
class BenchmarkPrompt:
    text: str
    domain: str
    topic: str


@dataclass(frozen=True)
class Candidate:
    text: str
    features: dict[str, float]
    gold: float


@dataclass(frozen=True)
class BenchmarkPair:
    """One annotated pair, keeping the true features that records drop."""

    pair_id: str
    split: str
    prompt: BenchmarkPrompt
    chosen: Candidate
    rejected: Candidate

    def to_record(self) -> dict:
        """TRL plain-text preference record plus gold metadata."""
        domain = DOMAIN_BY_NAME[self.prompt.domain]
        return {
            "prompt": self.prompt.text,
            "chosen": self.chosen.text,
            "rejected": self.rejected.text,
            "split": self.split,
            "domain": domain.name,
            "is_tail": domain.is_tail,
            "rule_set": domain.rule_set,
            "gold_chosen": self.chosen.gold,
            "gold_rejected": self.rejected.gold,
            "gold_margin": round(self.chosen.gold - self.rejected.gold, 6),
            "pair_id": self.pair_id,
        }


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1, dtype=float) ** exponent
    return weights / weights.sum()


def _group_probabilities(is_tail: bool, zipf_exponent: float) -> dict[str, float]:
    """Within-group Zipf probabilities, in DOMAINS order (which is the rank order)."""
    names = [d.name for d in DOMAINS if d.is_tail == is_tail]
    return dict(zip(names, (float(w) for w in _zipf_weights(len(names), zipf_exponent)), strict=True))


def domain_probabilities(alpha: float, zipf_exponent: float = 1.0) -> dict[str, float]:
    """Mixture probability of every domain: head share ``alpha``, Zipf within each group."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    head = _group_probabilities(False, zipf_exponent)
    tail = _group_probabilities(True, zipf_exponent)
    return {d.name: alpha * head[d.name] if not d.is_tail else (1.0 - alpha) * tail[d.name] for d in DOMAINS}


def gold_reward(features: Mapping[str, float], domain: str) -> float:
    """Gold reward: the domain's rule-set weights dotted with the feature values."""
    if domain not in DOMAIN_BY_NAME:
        raise ValueError(f"unknown domain {domain!r}")
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown features {sorted(unknown)}")
    weights = RULE_SETS[DOMAIN_BY_NAME[domain].rule_set]
    return round(sum(weights[name] * float(value) for name, value in features.items()), 6)


def _as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _sample_features(rng: np.random.Generator) -> dict[str, float]:
    features = {name: float(rng.random() < p) for name, p in FEATURE_PROBABILITIES.items()}
    features["detail"] = float(rng.integers(MAX_DETAIL + 1))
    return {name: features[name] for name in FEATURES}


def _main_sentence(relevant: bool, topic: str, rng: np.random.Generator) -> str:
    index = int(rng.integers(len(RELEVANT_MAINS)))
    if not relevant:
        return GENERIC_MAINS[index]
    return RELEVANT_MAINS[index].format(topic=topic)


def _body_sentences(features: Mapping[str, float], domain: Domain, rng: np.random.Generator) -> list[str]:
    """Detail, example, caveat and off-topic sentences, in random order."""
    n_detail = int(features["detail"])
    terms = rng.choice(len(domain.terms), size=n_detail, replace=False)
    sentences = [_pick(DETAIL_SENTENCES, rng).format(term=domain.terms[int(i)]) for i in terms]
    if features["example"]:
        sentences.append(_pick(EXAMPLE_SENTENCES, rng).format(object=_pick(domain.objects, rng)))
    if features["caveat"]:
        sentences.append(_pick(CAVEAT_SENTENCES, rng).format(verb=_pick(domain.verbs, rng)))
    if features["off_topic"]:
        sentences.append(_pick(OFF_TOPIC_SENTENCES, rng))
    return [sentences[int(i)] for i in rng.permutation(len(sentences))]


def render_response(features: Mapping[str, float], prompt: BenchmarkPrompt, rng: np.random.Generator) -> str:
    """Realise ``features`` as response text for ``prompt``."""
    domain = DOMAIN_BY_NAME[prompt.domain]
    enthusiastic = bool(features["enthusiasm"])
    sentences = [
        _pick(ENTHUSIASTIC_OPENERS if enthusiastic else PLAIN_OPENERS, rng),
        _main_sentence(bool(features["relevance"]), prompt.topic, rng),
        _pick(BASE_SENTENCES, rng),
        *_body_sentences(features, domain, rng),
        _pick(ENTHUSIASTIC_CLOSERS if enthusiastic else PLAIN_CLOSERS, rng),
    ]
    return " ".join(s for s in sentences if s)


def _candidate(prompt: BenchmarkPrompt, rng: np.random.Generator) -> Candidate:
    features = _sample_features(rng)
    return Candidate(render_response(features, prompt, rng), features, gold_reward(features, prompt.domain))


def sample_candidates(prompt: BenchmarkPrompt, n: int, seed: int | np.random.Generator) -> list[Candidate]:
    """Draw ``n`` independent responses to ``prompt`` (for best-of-n experiments)."""
    rng = _as_generator(seed)
    return [_candidate(prompt, rng) for _ in range(n)]


def _prompt_radices(domain: Domain) -> tuple[int, ...]:
    """Number of choices for each prompt slot: question, topic, context, situation, object."""
    return (
        len(PROMPT_QUESTIONS),
        len(domain.topics),
        len(PROMPT_CONTEXTS),
        len(PROMPT_SITUATIONS),
        len(domain.objects),
    )


def _prompt_from_index(domain: Domain, index: int) -> BenchmarkPrompt:
    """Decode a mixed-radix index into one distinct prompt of ``domain``."""
    digits = []
    for radix in _prompt_radices(domain):
        index, digit = divmod(index, radix)
        digits.append(digit)
    question, topic, context, situation, obj = digits
    text = " ".join(
        (
            PROMPT_QUESTIONS[question].format(topic=domain.topics[topic]),
            PROMPT_CONTEXTS[context],
            PROMPT_SITUATIONS[situation].format(object=domain.objects[obj]),
        )
    )
    return BenchmarkPrompt(text=text, domain=domain.name, topic=domain.topics[topic])


def _distinct_prompts(domain: Domain, count: int, rng: np.random.Generator) -> list[BenchmarkPrompt]:
    space = math.prod(_prompt_radices(domain))
    if count > space:
        raise ValueError(f"{domain.name} needs {count} distinct prompts but only {space} exist")
    return [_prompt_from_index(domain, int(i)) for i in rng.choice(space, size=count, replace=False)]


def _stratified_domains(n_head: int, n_tail: int, zipf_exponent: float, rng: np.random.Generator) -> list[str]:
    """Exact per-domain counts (largest remainder) for each group, shuffled."""
    names: list[str] = []
    for is_tail, n in ((False, n_head), (True, n_tail)):
        probs = _group_probabilities(is_tail, zipf_exponent)
        quotas = {name: p * n for name, p in probs.items()}
        counts = {name: math.floor(q) for name, q in quotas.items()}
        by_remainder = sorted(quotas, key=lambda name: counts[name] - quotas[name])
        for name in by_remainder[: n - sum(counts.values())]:
            counts[name] += 1
        names.extend(itertools.chain.from_iterable([name] * c for name, c in counts.items()))
    return [names[int(i)] for i in rng.permutation(len(names))]


def _split_domains(config: BenchmarkConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    probs = domain_probabilities(config.alpha, config.zipf_exponent)
    names, p = list(probs), np.array(list(probs.values()))
    return {
        "train": [names[int(i)] for i in rng.choice(len(names), size=config.n_train, p=p)],
        "validation": [names[int(i)] for i in rng.choice(len(names), size=config.n_validation, p=p)],
        "test": _stratified_domains(config.n_test_head, config.n_test_tail, config.zipf_exponent, rng),
    }


def _candidate_pair(prompt: BenchmarkPrompt, rng: np.random.Generator) -> tuple[Candidate, Candidate]:
    """Two responses whose gold margin is at least MIN_GOLD_MARGIN (near-ties are redrawn)."""
    while True:
        a, b = _candidate(prompt, rng), _candidate(prompt, rng)
        if abs(a.gold - b.gold) >= MIN_GOLD_MARGIN:
            return a, b


def _annotate(
    prompt: BenchmarkPrompt, split: str, index: int, temperature: float, rng: np.random.Generator
) -> BenchmarkPair:
    """Bradley-Terry annotator: prefers a with probability sigmoid(margin / temperature)."""
    a, b = _candidate_pair(prompt, rng)
    p_a = 1.0 / (1.0 + math.exp(-(a.gold - b.gold) / temperature))
    chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
    return BenchmarkPair(f"{split}-{index:05d}", split, prompt, chosen, rejected)


def generate_pairs(config: BenchmarkConfig = BenchmarkConfig()) -> list[BenchmarkPair]:
    """All annotated pairs (train, validation, test), with their true features."""
    rng = np.random.default_rng(config.seed)
    split_domains = _split_domains(config, rng)
    needed = Counter(itertools.chain.from_iterable(split_domains.values()))
    pools = {name: iter(_distinct_prompts(DOMAIN_BY_NAME[name], needed[name], rng)) for name in sorted(needed)}
    return [
        _annotate(next(pools[name]), split, index, config.label_noise_temperature, rng)
        for split in SPLITS
        for index, name in enumerate(split_domains[split])
    ]


def generate_benchmark(config: BenchmarkConfig = BenchmarkConfig()) -> list[dict]:
    """The benchmark as TRL plain-text preference records, ordered train, validation, test."""
    return [pair.to_record() for pair in generate_pairs(config)]


# Reading the gold reward back from response text: checks the labels of edited (augmented) pairs.


def _text_sentences(text: str) -> list[str]:
    """Sentences of a response, whitespace-normalised; bullets ("- ") and line breaks are ignored.

    A sentence ends at a token ending in ".", "!" or "?", so bulleted or reordered responses parse alike.
    """
    sentences: list[str] = []
    current: list[str] = []
    for token in text.split():
        if not current and token == "-":
            continue
        current.append(token)
        if token[-1] in ".!?":
            sentences.append(" ".join(current))
            current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def _fills_template(sentence: str, templates: tuple[str, ...], slot: str) -> bool:
    """Whether ``sentence`` is one of ``templates`` with any non-empty text in ``{slot}``.

    The slot is matched loosely so a word substituted consistently in prompt and response (the rare-token
    augmentation renames the topic) keeps the feature; on benchmark text the slot always holds a domain
    topic or term.
    """
    for template in templates:
        prefix, suffix = template.split("{" + slot + "}")
        if len(sentence) > len(prefix) + len(suffix) and sentence.startswith(prefix) and sentence.endswith(suffix):
            return True
    return False


def features_from_text(response: str, domain: str) -> dict[str, float]:
    """The six FEATURES of a response rendered by :func:`render_response`, read from its text.

    Robust to sentence order, bullets and line breaks. Enthusiasm is read as any sentence ending in "!":
    the enthusiastic openers and closers are the benchmark's only uses of "!" (the plain closer is
    "Good luck." with a period).
    """
    if domain not in DOMAIN_BY_NAME:
        raise ValueError(f"unknown domain {domain!r}")
    sentences = _text_sentences(response)
    features = {
        "relevance": any(_fills_template(s, RELEVANT_MAINS, "topic") for s in sentences),
        "detail": sum(_fills_template(s, DETAIL_SENTENCES, "term") for s in sentences),
        "example": any(s.startswith(EXAMPLE_MARKERS) for s in sentences),
        "caveat": any(marker in s for s in sentences for marker in CAVEAT_MARKERS),
        "enthusiasm": any(s.endswith("!") for s in sentences),
        "off_topic": any(s.startswith(OFF_TOPIC_MARKERS) for s in sentences),
    }
    return {name: float(features[name]) for name in FEATURES}


def gold_from_text(response: str, domain: str) -> float:
    """Gold reward of a benchmark response read from its text (equals the pair's stored gold)."""
    return gold_reward(features_from_text(response, domain), domain)


def label_agreement(pairs: Sequence[tuple[str, str]], domains: Sequence[str]) -> float:
    """Share of (chosen, rejected) texts whose gold reward, read from the text, prefers the chosen one."""
    if len(pairs) != len(domains):
        raise ValueError(f"{len(pairs)} pairs but {len(domains)} domains")
    if not pairs:
        raise ValueError("label agreement needs at least one pair")
    return float(np.mean([gold_from_text(c, d) > gold_from_text(r, d) for (c, r), d in zip(pairs, domains)]))


# Auditing edited (augmented) pairs: which domain a text now reads as, and whether gold still prefers the chosen.

DOMAIN_WORD = re.compile(r"[A-Za-z]{4,}")


TEMPLATES = (
    PROMPT_QUESTIONS,
    PROMPT_CONTEXTS,
    PROMPT_SITUATIONS,
    ENTHUSIASTIC_OPENERS,
    PLAIN_OPENERS,
    RELEVANT_MAINS,
    GENERIC_MAINS,
    BASE_SENTENCES,
    DETAIL_SENTENCES,
    EXAMPLE_SENTENCES,
    CAVEAT_SENTENCES,
    OFF_TOPIC_SENTENCES,
    ENTHUSIASTIC_CLOSERS,
    PLAIN_CLOSERS,
)


def _domain_words() -> dict[str, frozenset[str]]:
    """Per domain, the words (≥ 4 letters, lower case) of its topics, objects, terms and verbs used by no other
    domain and by no template sentence: the words that tell a reader which domain, so which gold rules, a text
    belongs to."""
    shared = {w.lower() for group in TEMPLATES for sentence in group for w in DOMAIN_WORD.findall(sentence)}
    words = {
        d.name: {w.lower() for phrase in d.topics + d.objects + d.terms + d.verbs for w in DOMAIN_WORD.findall(phrase)}
        for d in DOMAINS
    }
    return {
        name: frozenset(own - shared - set().union(*(other for n, other in words.items() if n != name)))
        for name, own in words.items()
    }


DOMAIN_WORDS = _domain_words()


def domain_from_text(text: str) -> str | None:
    """The domain whose own words occur most often in ``text``; None when none occurs or two domains tie."""
    found = Counter(w.lower() for w in DOMAIN_WORD.findall(text))
    hits = {name: sum(found[w] for w in words) for name, words in DOMAIN_WORDS.items()}
    best = max(hits.values())
    leaders = [name for name, count in hits.items() if count == best]
    return leaders[0] if best and len(leaders) == 1 else None


def foreign_words(text: str, domain: str) -> set[str]:
    """Words of ``text`` that belong to another domain's own vocabulary (and not to ``domain``'s)."""
    present = {w.lower() for w in DOMAIN_WORD.findall(text)}
    return {w for name, words in DOMAIN_WORDS.items() if name != domain for w in present & words}


def augmentation_audit(
    edited: Sequence[tuple[str, str, str, str]], source_domains: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per transform, for edited pairs ``(transform, prompt, chosen, rejected)`` of benchmark pairs from
    ``source_domains``: ``n``; ``gold_agreement``, the share whose gold reward, recomputed from the edited text
    under the domain the edited text reads as (:func:`domain_from_text`, the source's when undecided), prefers the
    chosen response; ``foreign_word``, the share holding another domain's word; ``domain_changed``, the share that
    reads as another domain."""
    if len(edited) != len(source_domains):
        raise ValueError(f"{len(edited)} edited pairs but {len(source_domains)} source domains")
    rows: dict[str, list[tuple[bool, bool, bool]]] = {}
    for (transform, prompt, chosen, rejected), source in zip(edited, source_domains):
        text = f"{prompt} {chosen} {rejected}"
        domain = domain_from_text(text) or source
        agrees = gold_from_text(chosen, domain) > gold_from_text(rejected, domain)
        rows.setdefault(transform, []).append((agrees, bool(foreign_words(text, source)), domain != source))
    return {
        transform: {
            "n": float(len(values)),
            "gold_agreement": float(np.mean([v[0] for v in values])),
            "foreign_word": float(np.mean([v[1] for v in values])),
            "domain_changed": float(np.mean([v[2] for v in values])),
        }
        for transform, values in sorted(rows.items())
    }
