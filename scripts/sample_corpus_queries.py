"""Hand-written evaluation queries and their query images (data only; scripts/build_sample_corpus.py uses it).

The builder's generated queries (12 per task type, one per corpus photo) come first; the queries below are
appended after them. Every query image was chosen by looking at it next to the corpus images of its concept
(contact sheets), only from source keys reserved in scripts/sample_corpus_reserved.txt (none of them is in
the shipped training manifest, a corpus item or a re-export of one), and never by how a model ranks it.

Positives are not listed here: build_sample_corpus.positives() derives them from the concepts, by the rule
written there. What a query image shows beyond its concept is declared in SHOWS (a kind whose passage
describes it, e.g. the ram emoji shows a ram) and SPECIFIC (it shows one particular kind, e.g. Saturn, so the
concept's other kinds, e.g. the Earth, are not "the same thing").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueryImage:
    key: str  # source key (reserved)
    concept: str
    desc: str  # what the page's example label says it is: "a frog drawing"


@dataclass(frozen=True)
class Q:
    task: str
    image: str | None  # a QueryImage key, or None for text-only queries
    concept: str
    text: str | None = None
    # when the text narrows the request ("but a red one"): the source keys of the only items that answer it
    only: tuple[str, ...] = ()
    # a text question asking for the definition itself: a passage about one kind of it does not answer it
    defines: bool = False


# what a query image shows beyond its concept: WordNet keys of the kind passages that describe it
SHOWS: dict[str, tuple[str, ...]] = {
    "twemoji:1f40f": ("wordnet:ram.n.05",),  # q-sheep.jpg is the ram emoji, curled horns
    "twemoji:1f382": ("wordnet:birthday_cake.n.01",),  # candles on a layered cake
    "notoemoji:1f40f": ("wordnet:ram.n.05",),
    "notoemoji:1f382": ("wordnet:birthday_cake.n.01",),
    "notoemoji:1f690": ("wordnet:minibus.n.01",),
    "notoemoji:1f354": ("wordnet:cheeseburger.n.01",),  # a slice of melted cheese in the bun
    "notoemoji:1f681": ("wordnet:single-rotor_helicopter.n.01",),  # one main rotor and a tail rotor
    "openclipart:tools/digital_camera_nicu_bucu_01.svg": ("wordnet:digital_camera.n.01",),
    "openclipart:animals/mammals/housecats/kitten_gerald_g._01.svg": ("wordnet:domestic_cat.n.01",),
    "notoemoji:1f408": ("wordnet:domestic_cat.n.01",),
}
# query images of one particular kind: items of the concept's narrower concepts are not "the same thing"
SPECIFIC: frozenset[str] = frozenset({
    "twemoji:1fa90",  # q-planet.jpg: a ringed planet (Saturn); the Earth globes do not answer it
})

_SUNPY = "PyPI sunpy 7.0.5, sunpy/data"
PHOTO_CREDITS = {
    "sunpy:The_Blue_Marble_150px.png": f"NASA, Apollo 17 crew, 'The Blue Marble', 1972 ({_SUNPY})",
    "sunpy:test/2013_06_24__17_31_30_84__SDO_AIA_AIA_193.jp2":
        f"NASA/SDO and the AIA science team, 2013-06-24, 19.3 nm ({_SUNPY}/test)",
    "sunpy:test/2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2":
        f"NASA/SDO and the HMI science team, 2023-01-31, continuum ({_SUNPY}/test)",
}

_NOTO = "notoemoji"
IMAGES: tuple[QueryImage, ...] = (
    # photographs (NASA, public domain; PyPI sunpy)
    QueryImage("sunpy:The_Blue_Marble_150px.png", "earth", "a photograph of the Earth from space"),
    QueryImage("sunpy:test/2013_06_24__17_31_30_84__SDO_AIA_AIA_193.jp2", "sun",
               "an ultraviolet photograph of the Sun"),
    QueryImage("sunpy:test/2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2", "sun",
               "a telescope photograph of the Sun's disc"),
    # clip art (Debian openclipart-svg)
    QueryImage("openclipart:animals/mammals/cartoon_cat_gerald_g._02.svg", "cat", "a cat drawing"),
    QueryImage("openclipart:animals/mammals/housecats/kitten_gerald_g._01.svg", "cat", "a kitten drawing"),
    QueryImage("openclipart:tools/digital_camera_nicu_bucu_01.svg", "camera", "a digital camera drawing"),
    QueryImage("openclipart:plants/flowers/flowers_jonathan_dietric_01.svg", "flower", "a drawing of daisies"),
    QueryImage("openclipart:plants/trees/tree_branches_and_roots_01.svg", "tree", "a tree drawing"),
    QueryImage("openclipart:animals/bugs/farfalla_semplice_archit_01.svg", "butterfly", "a butterfly drawing"),
    QueryImage("openclipart:transportation/vehicles/skoda_car_alejandro_teja_.svg", "car", "a car drawing"),
    QueryImage("openclipart:transportation/boating/sailing_kids.svg", "sailboat",
               "a drawing of children in a sailboat"),
    QueryImage("openclipart:animals/mammals/dogs/bulldog_puppy_ganson.svg", "dog", "a bulldog puppy drawing"),
    # game sprites (Kenney, CC0; PyPI arcade)
    QueryImage("kenney:enemies/frog.png", "frog", "a frog game sprite"),
    QueryImage("kenney:enemies/fishGreen.png", "fish", "a fish game sprite"),
    QueryImage("kenney:tiles/mushroomRed.png", "mushroom", "a mushroom game sprite"),
    QueryImage("kenney:items/keyRed.png", "key", "a key game sprite"),
    QueryImage("kenney:miami_synth_parallax/car/car-idle.png", "car", "a sports car game sprite"),
    QueryImage("kenney:tiles/cactus.png", "cactus", "a cactus game sprite"),
    # Twemoji not in the corpus (npm emoji-datasource-twitter)
    QueryImage("twemoji:1f422", "turtle", "a turtle emoji"),
    QueryImage("twemoji:1f349", "watermelon", "a watermelon emoji"),
    QueryImage("twemoji:1f3cd-fe0f", "motorcycle", "a motorcycle emoji"),
    QueryImage("twemoji:1f680", "rocket", "a rocket emoji"),
    QueryImage("twemoji:1f695", "car", "a taxi emoji"),
    QueryImage("twemoji:1f6e9-fe0f", "airplane", "a small airplane emoji"),
    QueryImage("twemoji:1f3d8-fe0f", "house", "a houses emoji"),
    QueryImage("twemoji:1f9ae", "dog", "a guide dog emoji"),
    # Noto Emoji (npm emoji-datasource-google)
    *(QueryImage(f"{_NOTO}:{code}", concept, desc) for code, concept, desc in (
        ("1f408", "cat", "a cat emoji"), ("1f431", "cat", "a cat face emoji"),
        ("1f415", "dog", "a dog emoji"), ("1f436", "dog", "a dog face emoji"), ("1f429", "dog", "a poodle emoji"),
        ("1f40e", "horse", "a running horse emoji"), ("1f434", "horse", "a horse face emoji"),
        ("1f40f", "sheep", "a ram emoji"), ("1f411", "sheep", "a sheep emoji"),
        ("1f416", "pig", "a pig emoji"), ("1f404", "cow", "a cow emoji"), ("1f42e", "cow", "a cow face emoji"),
        ("1f407", "rabbit", "a rabbit emoji"), ("1f42d", "mouse", "a mouse face emoji"),
        ("1f418", "elephant", "an elephant emoji"), ("1f98b", "butterfly", "a butterfly emoji"),
        ("1f986", "duck", "a duck emoji"), ("1f427", "penguin", "a penguin emoji"), ("1f989", "owl", "an owl emoji"),
        ("1f985", "eagle", "an eagle emoji"), ("1f422", "turtle", "a turtle emoji"),
        ("1f34e", "apple", "a red apple emoji"), ("1f34f", "apple", "a green apple emoji"),
        ("1f34c", "banana", "a banana emoji"), ("1f350", "pear", "a pear emoji"),
        ("1f352", "cherry", "a cherries emoji"), ("1f353", "strawberry", "a strawberry emoji"),
        ("1f347", "grapes", "a grapes emoji"), ("1f35e", "bread", "a bread emoji"),
        ("1f956", "bread", "a baguette emoji"), ("1f9c0", "cheese", "a cheese emoji"),
        ("1f355", "pizza", "a pizza slice emoji"), ("2615", "coffee", "a hot drink emoji"),
        ("1f382", "cake", "a birthday cake emoji"), ("1f34b", "lemon", "a lemon emoji"),
        ("1f354", "hamburger", "a hamburger emoji"), ("1f95a", "egg", "an egg emoji"),
        ("1f349", "watermelon", "a watermelon emoji"), ("1f337", "tulip", "a tulip emoji"),
        ("1f33b", "sunflower", "a sunflower emoji"), ("1f334", "palm tree", "a palm tree emoji"),
        ("1f335", "cactus", "a cactus emoji"), ("1f344-200d-1f7eb", "mushroom", "a brown mushroom emoji"),
        ("1f341", "leaf", "a maple leaf emoji"), ("1f30c", "galaxy", "a Milky Way emoji"),
        ("1f319", "moon", "a crescent moon emoji"), ("1f315", "moon", "a full moon emoji"),
        ("2604-fe0f", "comet", "a comet emoji"), ("1f6f0-fe0f", "satellite", "a satellite emoji"),
        ("1f6b2", "bicycle", "a bicycle emoji"), ("1f68c", "bus", "a bus emoji"),
        ("1f690", "bus", "a minibus emoji"), ("1f69c", "tractor", "a tractor emoji"),
        ("2708-fe0f", "airplane", "an airplane emoji"), ("1f6f3-fe0f", "ship", "a passenger ship emoji"),
        ("1f69a", "truck", "a delivery truck emoji"), ("1f681", "helicopter", "a helicopter emoji"),
        ("26f0-fe0f", "mountain", "a mountain emoji"), ("1f30b", "volcano", "a volcano emoji"),
        ("1f3ef", "castle", "a Japanese castle emoji"), ("26ea", "church", "a church emoji"),
        ("1f3dd-fe0f", "island", "a desert island emoji"), ("1f528", "hammer", "a hammer emoji"),
        ("1f527", "wrench", "a wrench emoji"), ("1fa93", "axe", "an axe emoji"), ("1f511", "key", "a key emoji"),
        ("1fa9c", "ladder", "a ladder emoji"), ("1f4f7", "camera", "a camera emoji"),
        ("1f3a4", "microphone", "a microphone emoji"), ("1f941", "drum", "a drum emoji"),
        ("1f3bb", "violin", "a violin emoji"), ("1f3ba", "trumpet", "a trumpet emoji"),
        ("1f3b7", "saxophone", "a saxophone emoji"), ("1fa88", "flute", "a flute emoji"),
        ("1fa89", "harp", "a harp emoji"), ("1fa97", "accordion", "an accordion emoji"),
        ("1fa95", "banjo", "a banjo emoji"), ("1f3a7", "headphones", "a headphones emoji"),
    )),
)


def _n(code: str) -> str:
    return f"{_NOTO}:{code}"


QUERIES: tuple[Q, ...] = (
    # ---- text -> image: descriptions and synonyms, not only the name
    Q("t->i", None, "wrench", "a spanner for turning nuts and bolts"),
    Q("t->i", None, "telescope", "an instrument for looking at the stars"),
    Q("t->i", None, "butterfly", "a colourful insect with large patterned wings"),
    Q("t->i", None, "scissors", "something to cut paper with"),
    Q("t->i", None, "strawberry", "a red berry with little seeds on its skin"),
    Q("t->i", None, "volcano", "a volcano spewing lava"),
    Q("t->i", None, "guitar", "guitars"),
    Q("t->i", None, "bridge", "a bridge across the water"),
    Q("t->i", None, "beach", "a sunny beach by the sea"),
    Q("t->i", None, "train", "picture of a train"),
    # ---- text -> text: questions a reader would ask, answered by the encyclopedia passages
    Q("t->t", None, "elephant", "Which large animal has a trunk and tusks?"),
    Q("t->t", None, "penguin", "flightless seabird of the Antarctic"),
    Q("t->t", None, "volcano", "Tell me about volcanoes."),
    Q("t->t", None, "lemon", "sour yellow citrus fruit"),
    Q("t->t", None, "hamburger", "What goes into a burger?"),
    Q("t->t", None, "galaxy", "a huge system of stars held together by gravity"),
    Q("t->t", None, "helicopter", "an aircraft lifted by spinning blades instead of wings"),
    Q("t->t", None, "saxophone", "the reed instrument with a curved metal body played in jazz"),
    Q("t->t", None, "ladder", "What do you climb to reach a high shelf?"),
    Q("t->t", None, "island", "land with water all around it"),
    Q("t->t", None, "telescope", "Explain what a telescope does.", defines=True),
    Q("t->t", None, "cheese", "food made from pressed milk curds"),
    Q("t->t", None, "frog", "an amphibian that jumps and croaks"),
    # the aeolian harp is a box played by the wind: no triangular frame
    Q("t->t", None, "harp", "stringed instrument with a triangular frame", defines=True),
    Q("t->t", None, "church", "a building where Christians worship"),
    Q("t->t", None, "canyon", "a deep valley cut by a river"),
    Q("t->t", None, "microphone", "What device turns sound into an electrical signal?"),
    Q("t->t", None, "shovel", "a hand tool for digging and moving soil"),
    # ---- text -> captioned image
    Q("t->(i,t)", None, "cat", "a cat picture with a caption"),
    Q("t->(i,t)", None, "dog", "dog illustration with a short description"),
    Q("t->(i,t)", None, "bread", "a loaf of bread, labelled"),
    Q("t->(i,t)", None, "drum", "a drum, with a caption saying what it is"),
    Q("t->(i,t)", None, "truck", "a captioned picture of a lorry"),
    Q("t->(i,t)", None, "harp", "harp, with its caption"),
    Q("t->(i,t)", None, "violin", "a fiddle shown together with a caption"),
    Q("t->(i,t)", None, "leaf", "a leaf and a line of text describing it"),
    Q("t->(i,t)", None, "coffee", "a cup of coffee, captioned"),
    # ---- image -> text
    Q("i->t", _n("1f408"), "cat"),
    Q("i->t", "kenney:enemies/frog.png", "frog"),
    Q("i->t", "twemoji:1f422", "turtle"),
    Q("i->t", _n("1f418"), "elephant"),
    Q("i->t", _n("1f427"), "penguin"),
    Q("i->t", _n("1f98b"), "butterfly"),
    Q("i->t", "twemoji:1f349", "watermelon"),
    Q("i->t", _n("1f9c0"), "cheese"),
    Q("i->t", "sunpy:The_Blue_Marble_150px.png", "earth"),
    Q("i->t", "sunpy:test/2023_01_31__03_39_23_200__SDO_HMI_HMI_continuum.jp2", "sun"),
    Q("i->t", _n("1f354"), "hamburger"),
    Q("i->t", _n("1f3b7"), "saxophone"),
    Q("i->t", _n("1fa97"), "accordion"),
    Q("i->t", _n("1fa95"), "banjo"),
    Q("i->t", "twemoji:1f3cd-fe0f", "motorcycle"),
    Q("i->t", _n("1f681"), "helicopter"),
    Q("i->t", "openclipart:tools/digital_camera_nicu_bucu_01.svg", "camera"),
    Q("i->t", _n("1f690"), "bus"),
    # ---- image -> image
    Q("i->i", _n("1f415"), "dog"),
    Q("i->i", "openclipart:animals/mammals/cartoon_cat_gerald_g._02.svg", "cat"),
    Q("i->i", "kenney:enemies/fishGreen.png", "fish"),
    Q("i->i", _n("1f407"), "rabbit"),
    Q("i->i", _n("1f418"), "elephant"),
    Q("i->i", _n("1f986"), "duck"),
    Q("i->i", _n("1f34e"), "apple"),
    Q("i->i", _n("1f34c"), "banana"),
    Q("i->i", _n("1f352"), "cherry"),
    Q("i->i", _n("1f34b"), "lemon"),
    Q("i->i", "openclipart:plants/flowers/flowers_jonathan_dietric_01.svg", "flower"),
    Q("i->i", "openclipart:plants/trees/tree_branches_and_roots_01.svg", "tree"),
    Q("i->i", "sunpy:test/2013_06_24__17_31_30_84__SDO_AIA_AIA_193.jp2", "sun"),
    Q("i->i", _n("1f319"), "moon"),
    Q("i->i", "twemoji:1f680", "rocket"),
    Q("i->i", _n("1f6b2"), "bicycle"),
    Q("i->i", "kenney:items/keyRed.png", "key"),
    Q("i->i", _n("1f941"), "drum"),
    # ---- image + text -> image
    Q("(i,t)->i", _n("1f34f"), "apple", "The same fruit, but a red one.",
      only=("openclipart:food/apple_bitten_dan_gerhard_01.svg", "openclipart:food/fruit/applf.svg")),
    Q("(i,t)->i", "sunpy:The_Blue_Marble_150px.png", "earth", "Find other pictures of this planet."),
    Q("(i,t)->i", _n("1f411"), "sheep", "More pictures of this farm animal."),
    Q("(i,t)->i", _n("1f40e"), "horse", "Show me other pictures of this animal."),
    Q("(i,t)->i", _n("1f416"), "pig", "Other pictures of this animal, please."),
    Q("(i,t)->i", _n("1f989"), "owl", "A different drawing of this bird."),
    Q("(i,t)->i", _n("1f985"), "eagle", "I'm looking for more images of this bird of prey."),
    Q("(i,t)->i", _n("1f427"), "penguin", "find another image of the animal shown"),
    Q("(i,t)->i", _n("1f347"), "grapes", "more images of this fruit"),
    Q("(i,t)->i", _n("1f350"), "pear", "Same fruit, another picture."),
    Q("(i,t)->i", _n("1f35e"), "bread", "What else looks like this food? Pictures only."),
    Q("(i,t)->i", _n("2615"), "coffee", "Pictures of the same drink."),
    Q("(i,t)->i", _n("1f341"), "leaf", "Other leaves like this one."),
    Q("(i,t)->i", _n("1f30c"), "galaxy", "another picture of this, out in space"),
    Q("(i,t)->i", "twemoji:1f695", "car", "Show a different picture of this kind of vehicle."),
    Q("(i,t)->i", "twemoji:1f6e9-fe0f", "airplane", "More images of this aircraft."),
    Q("(i,t)->i", _n("26f0-fe0f"), "mountain", "other pictures of this landscape feature"),
    Q("(i,t)->i", _n("1f3ba"), "trumpet", "More images of this instrument."),
    # ---- image + text -> text
    Q("(i,t)->t", _n("1f436"), "dog", "What animal is this? I need a short encyclopedia entry."),
    Q("(i,t)->t", "openclipart:animals/mammals/housecats/kitten_gerald_g._01.svg", "cat", "Describe this animal."),
    Q("(i,t)->t", _n("1f434"), "horse", "Which animal is this, and what is it?"),
    Q("(i,t)->t", _n("1f40f"), "sheep", "Tell me what kind of animal this is."),
    Q("(i,t)->t", _n("1f42e"), "cow", "Find a description of this animal."),
    Q("(i,t)->t", _n("1f42d"), "mouse", "What is this creature?"),
    Q("(i,t)->t", _n("1f986"), "duck", "an encyclopedia entry about this bird"),
    Q("(i,t)->t", _n("1f353"), "strawberry", "What is this fruit?"),
    Q("(i,t)->t", _n("1f382"), "cake", "What is this food? Give me a short description."),
    Q("(i,t)->t", _n("1f337"), "tulip", "Which flower is this? Find its description."),
    Q("(i,t)->t", _n("1f33b"), "sunflower", "What is the name of this plant? A description, please."),
    Q("(i,t)->t", _n("1f334"), "palm tree", "What kind of tree is this?"),
    Q("(i,t)->t", _n("2604-fe0f"), "comet", "What is this object in the sky?"),
    Q("(i,t)->t", "sunpy:test/2013_06_24__17_31_30_84__SDO_AIA_AIA_193.jp2", "sun",
      "What is shown in this photograph?"),
    Q("(i,t)->t", _n("1f69c"), "tractor", "What vehicle is this?"),
    Q("(i,t)->t", _n("1f527"), "wrench", "Name this tool and explain what it is for."),
    Q("(i,t)->t", _n("1fa9c"), "ladder", "What is this used for?"),
    Q("(i,t)->t", _n("1f3a7"), "headphones", "What is this device?"),
    # ---- image + text -> captioned image
    Q("(i,t)->(i,t)", _n("1f431"), "cat", "Find a labelled picture of this animal."),
    Q("(i,t)->(i,t)", _n("1f429"), "dog", "a captioned drawing of the same animal"),
    Q("(i,t)->(i,t)", "openclipart:animals/bugs/farfalla_semplice_archit_01.svg", "butterfly",
      "An annotated picture of this insect."),
    Q("(i,t)->(i,t)", _n("1f422"), "turtle", "a captioned image of this reptile"),
    Q("(i,t)->(i,t)", _n("1f404"), "cow", "Labelled picture of this animal, please."),
    Q("(i,t)->(i,t)", _n("1f956"), "bread", "This food, with a caption."),
    Q("(i,t)->(i,t)", _n("1f355"), "pizza", "the same dish with a caption"),
    Q("(i,t)->(i,t)", _n("1f349"), "watermelon", "Show this fruit with a description."),
    Q("(i,t)->(i,t)", "kenney:tiles/cactus.png", "cactus", "a captioned picture of this plant"),
    Q("(i,t)->(i,t)", _n("1f344-200d-1f7eb"), "mushroom", "Find a captioned picture of this."),
    Q("(i,t)->(i,t)", _n("1f68c"), "bus", "A picture of this vehicle with a description."),
    Q("(i,t)->(i,t)", "twemoji:1f3d8-fe0f", "house", "A captioned picture of this kind of building."),
    Q("(i,t)->(i,t)", _n("26ea"), "church", "this building, with a caption saying what it is"),
    Q("(i,t)->(i,t)", _n("1f3dd-fe0f"), "island", "a labelled picture of the same kind of place"),
    Q("(i,t)->(i,t)", _n("1f4f7"), "camera", "Find a labelled picture of this device."),
    Q("(i,t)->(i,t)", "kenney:miami_synth_parallax/car/car-idle.png", "car",
      "the same kind of vehicle, with a caption"),
    Q("(i,t)->(i,t)", _n("1f6f0-fe0f"), "satellite", "A captioned picture of the same thing."),
    Q("(i,t)->(i,t)", _n("1f315"), "moon", "Show this with a caption."),
)
