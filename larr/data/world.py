"""The tables behind the synthetic food-delivery world: vocabularies, hidden attributes, wording.

Only data lives here; :mod:`larr.data.synth` turns it into shops, users and impressions.
Everything is documented in ``docs/world.md``.

The *hidden semantic attributes* are the heart of the world. Every cuisine and every scene
value carries a vector over :data:`DIMS`; the click model adds
``BETA · need(scene) · (cuisine − mean cuisine)`` to the click logit, where ``need`` is the
sum of the vectors of the request's twelve scene values. Test-only scene values ("typhoon",
"Qixi Festival", "hotel", …) get vectors close to the seen value they resemble in meaning,
so a model that reads "weather: typhoon" as text can transfer what it learnt from
"weather: thunderstorm", while a model of opaque IDs cannot. The long-tail features (landmark,
event; world v2) have hundreds of named instances whose vectors come from their *type* (every
hospital is health+, speed+), most seen a handful of times or never before the test period.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from larr.data.schema import SceneFeature

DIMS: tuple[str, ...] = (
    "warmth",  # craving hot, warming food (cold, rain, snow)
    "refreshment",  # craving cold, iced, refreshing food (heat)
    "speed",  # wanting something fast and simple (workday lunch, exams)
    "indulgence",  # treat / comfort food (weekend, celebrations, late night)
    "sharing",  # ordering for several people (family, festivals, parties)
    "health",  # light, healthy food
    "late_night",  # night-snack cravings
    "breakfast",  # morning food
)
"""The hidden semantic dimensions shared by cuisines and scene values."""


def vec(**kw: float) -> tuple[float, ...]:
    """An attribute vector from keyword weights; unnamed dimensions are 0."""
    unknown = set(kw) - set(DIMS)
    if unknown:
        raise ValueError(f"unknown attribute dimensions {sorted(unknown)}")
    return tuple(float(kw.get(d, 0.0)) for d in DIMS)


# ---------------------------------------------------------------------------- city

DISTRICT_TYPES: tuple[str, ...] = ("office", "residential", "university", "nightlife", "suburb")


@dataclass(frozen=True)
class District:
    name: str
    kind: str  # one of DISTRICT_TYPES
    xy: tuple[float, float]  # position on the city map, km
    extra: tuple[float, ...] = vec()  # small district-specific attribute offset


DISTRICTS: tuple[District, ...] = (
    District("Central Business District", "office", (0.0, 0.0)),
    District("Hi-Tech Park", "office", (7.0, 3.0), vec(speed=0.1)),
    District("Financial Street", "office", (-2.5, 2.0)),
    District("Maple Garden", "residential", (3.0, -3.5)),
    District("Riverside Residences", "residential", (-4.5, -2.0), vec(health=0.1)),
    District("Old Town", "residential", (-1.5, -5.0), vec(warmth=0.1)),
    District("Greenfield Estate", "residential", (7.5, -2.5)),
    District("University Town", "university", (10.0, 6.5)),
    District("Academy Hill", "university", (-6.5, 5.0)),
    District("Bar Street Quarter", "nightlife", (1.5, 2.0), vec(indulgence=0.1)),
    District("Night Market District", "nightlife", (-3.5, 0.5), vec(late_night=0.2)),
    District("West Lake Suburb", "suburb", (-11.0, -3.0)),
    District("Airport New Town", "suburb", (13.0, -6.0)),
)

SAME_DISTRICT_KM = 1.2
"""Typical delivery distance inside one district."""

SHOP_DISTRICT_WEIGHT = {"office": 1.3, "residential": 1.0, "university": 0.8, "nightlife": 1.4, "suburb": 0.6}
"""How shops spread over district types."""


# ---------------------------------------------------------------------------- cuisines


@dataclass(frozen=True)
class Cuisine:
    name: str
    attrs: tuple[float, ...]  # hidden, over DIMS, each 0..1
    weight: float  # how common shops of this cuisine are
    price_p: tuple[float, float, float, float]  # P(price_level = 1..4)
    hours: tuple[int, int]  # typical opening hour, closing hour (> 24 means after midnight)
    names: tuple[str, ...]  # name templates: {surname} {adj} {place}
    places: tuple[str, ...]
    phrases: tuple[str, ...]  # cuisine-specific description phrases
    dishes: tuple[tuple[str, float], ...]  # (dish, base price in yuan)


CUISINES: tuple[Cuisine, ...] = (
    Cuisine(
        "hotpot", vec(warmth=1.0, speed=0.1, indulgence=0.7, sharing=1.0, health=0.3, late_night=0.6),
        4, (0.0, 0.2, 0.5, 0.3), (11, 26),
        ("{surname}'s {place} Hotpot", "{adj} Cauldron Hotpot", "{place} Spicy Hotpot House", "Bubbling {adj} Hotpot"),
        ("Chongqing", "Chengdu", "Sichuan", "Mongolian"),
        ("bubbling beef-tallow broth", "a rich mushroom broth for the mild-hearted",
         "hand-sliced fatty beef and lamb", "DIY dipping-sauce bar", "numbing Sichuan peppercorns"),
        (("Beef tallow spicy broth", 38), ("Mushroom broth", 32), ("Tomato broth", 30), ("Sliced fatty beef", 36),
         ("Lamb rolls", 34), ("Beef tripe", 28), ("Shrimp paste", 30), ("Tofu skin", 12), ("Lotus root slices", 10),
         ("Hand-cut noodles", 8), ("Vegetable platter", 18)),
    ),
    Cuisine(
        "noodle soup", vec(warmth=0.9, refreshment=0.1, speed=0.7, indulgence=0.3, sharing=0.1, health=0.4,
                           late_night=0.4, breakfast=0.3),
        6, (0.4, 0.5, 0.1, 0.0), (7, 22),
        ("{surname}'s Noodle House", "{place} Beef Noodles", "{adj} Bowl Noodle Bar"),
        ("Lanzhou", "Taiwan", "Chongqing", "Hakata"),
        ("slow-simmered bone broth", "hand-pulled noodles made to order", "a steaming bowl in minutes",
         "tender braised beef", "clear, fragrant soup"),
        (("Braised beef noodle soup", 26), ("Hand-pulled beef noodles", 22), ("Wonton noodle soup", 20),
         ("Pork bone ramen", 32), ("Tomato egg noodle soup", 18), ("Spicy Chongqing noodles", 16),
         ("Chicken broth rice noodles", 22)),
    ),
    Cuisine(
        "breakfast congee", vec(warmth=0.8, refreshment=0.1, speed=0.6, indulgence=0.1, sharing=0.1, health=0.7,
                                late_night=0.1, breakfast=1.0),
        3, (0.6, 0.4, 0.0, 0.0), (6, 14),
        ("{surname}'s Congee Shop", "{adj} Morning Congee", "{place} Porridge Kitchen"),
        ("Cantonese", "Chaoshan", "Hong Kong"),
        ("silky rice congee", "soy milk ground fresh every morning", "golden fried dough sticks",
         "a gentle start to the day", "home-style pickles"),
        (("Century egg & pork congee", 12), ("Millet pumpkin congee", 8), ("Seafood congee", 18),
         ("Fried dough stick", 4), ("Steamed egg custard", 8), ("Soy milk", 5), ("Scallion pancake", 7)),
    ),
    Cuisine(
        "BBQ skewers", vec(warmth=0.4, refreshment=0.2, speed=0.3, indulgence=0.8, sharing=0.8, health=0.1,
                           late_night=1.0),
        4, (0.2, 0.5, 0.3, 0.0), (17, 28),
        ("{surname}'s Skewers", "{place} Street BBQ", "{adj} Charcoal Grill"),
        ("Xinjiang", "Northeast", "Zibo", "Harbin"),
        ("charcoal-grilled lamb skewers", "cumin and chili on everything", "grilled oysters with garlic",
         "cold beer on the side", "a smoky street-food feast"),
        (("Lamb skewers (5)", 25), ("Grilled chicken wings", 18), ("Grilled oysters", 30), ("Grilled eggplant", 12),
         ("Beef skewers", 28), ("Grilled squid", 22), ("Garlic chives", 8), ("Cold beer", 10)),
    ),
    Cuisine(
        "bubble tea", vec(warmth=0.1, refreshment=0.9, speed=0.6, indulgence=0.7, sharing=0.2, health=0.1,
                          late_night=0.3, breakfast=0.1),
        6, (0.5, 0.45, 0.05, 0.0), (10, 23),
        ("{adj} Boba", "{surname} Tea Lab", "{place} Milk Tea"),
        ("Taipei", "Hong Kong", "Formosa"),
        ("chewy brown-sugar pearls", "fresh fruit teas", "cheese foam on top", "choose your sweetness and ice",
         "hot ginger milk tea for chilly days"),
        (("Brown sugar boba milk", 16), ("Iced jasmine milk tea", 14), ("Mango pomelo sago", 18),
         ("Cheese foam oolong", 19), ("Grape fruit tea", 17), ("Taro milk tea", 15), ("Hot ginger milk tea", 16)),
    ),
    Cuisine(
        "ice cream", vec(refreshment=1.0, speed=0.5, indulgence=0.8, sharing=0.3, health=0.1, late_night=0.3),
        2, (0.3, 0.5, 0.2, 0.0), (11, 23),
        ("{adj} Scoop", "{surname}'s Gelato", "{place} Creamery"),
        ("Sicilian", "Hokkaido", "Milano"),
        ("creamy gelato churned daily", "fruit sorbets", "sundaes piled high", "shaved ice with mango",
         "family tubs to share"),
        (("Vanilla soft serve", 8), ("Matcha gelato", 18), ("Mango sorbet", 16), ("Chocolate sundae", 20),
         ("Durian ice cream", 22), ("Family ice cream tub", 48), ("Strawberry shaved ice", 20)),
    ),
    Cuisine(
        "salads", vec(refreshment=0.7, speed=0.6, health=1.0, breakfast=0.2),
        3, (0.0, 0.4, 0.5, 0.1), (10, 21),
        ("{adj} Greens", "{surname}'s Salad Bar", "{place} Bowl Co."),
        ("Green Valley", "Pacific", "Nordic"),
        ("crisp greens and grains", "calorie counts on every bowl", "build-your-own bowls", "avocado and quinoa",
         "dressings on the side"),
        (("Chicken Caesar salad", 32), ("Quinoa avocado bowl", 38), ("Tuna poke bowl", 42), ("Greek salad", 28),
         ("Low-calorie beef salad", 36), ("Cold-pressed green juice", 22)),
    ),
    Cuisine(
        "fried chicken", vec(warmth=0.3, refreshment=0.1, speed=0.6, indulgence=1.0, sharing=0.6, late_night=0.8),
        5, (0.3, 0.6, 0.1, 0.0), (10, 26),
        ("{adj} Crispy Chicken", "{surname}'s Fried Chicken", "{place} Chicken & Beer"),
        ("Seoul", "Nashville", "Taiwan", "Busan"),
        ("double-fried, extra crispy", "sweet-spicy Korean glaze", "chicken and beer nights", "buckets to share",
         "golden fries"),
        (("Crispy fried chicken (half)", 32), ("Spicy wings (6)", 26), ("Popcorn chicken", 18),
         ("Yangnyeom chicken", 45), ("Fries", 12), ("Cola", 6), ("Family bucket", 88)),
    ),
    Cuisine(
        "bento", vec(warmth=0.4, refreshment=0.2, speed=0.9, indulgence=0.2, sharing=0.1, health=0.6,
                     late_night=0.1, breakfast=0.1),
        4, (0.2, 0.6, 0.2, 0.0), (10, 21),
        ("{adj} Bento", "{surname}'s Lunch Box", "{place} Bento Kitchen"),
        ("Tokyo", "Osaka", "Kyoto"),
        ("balanced boxed meals", "teriyaki and katsu", "rice, mains and sides in one box", "ready to eat at your desk"),
        (("Teriyaki chicken bento", 28), ("Braised pork bento", 26), ("Salmon bento", 42), ("Curry katsu bento", 32),
         ("Vegetable bento", 22), ("Miso soup", 6)),
    ),
    Cuisine(
        "coffee", vec(warmth=0.4, refreshment=0.4, speed=0.8, indulgence=0.3, sharing=0.1, health=0.3,
                      late_night=0.2, breakfast=0.7),
        4, (0.1, 0.5, 0.4, 0.0), (7, 20),
        ("{adj} Bean Coffee", "{surname} Roasters", "{place} Espresso Bar"),
        ("Yunnan", "Ethiopia", "Melbourne", "Brooklyn"),
        ("single-origin beans roasted in house", "flat whites and cold brew", "a caffeine kick",
         "pastries baked this morning"),
        (("Americano", 18), ("Latte", 24), ("Iced latte", 25), ("Flat white", 26), ("Cold brew", 24),
         ("Croissant", 14), ("Hot mocha", 28)),
    ),
    Cuisine(
        "bakery", vec(warmth=0.2, refreshment=0.1, speed=0.7, indulgence=0.5, sharing=0.2, health=0.3,
                      late_night=0.1, breakfast=0.9),
        3, (0.4, 0.5, 0.1, 0.0), (7, 21),
        ("{adj} Oven Bakery", "{surname}'s Bakehouse", "{place} Boulangerie"),
        ("Paris", "Hong Kong", "Vienna"),
        ("bread fresh from the oven", "flaky croissants and egg tarts", "sandwiches for breakfast", "buttery pastries"),
        (("Croissant", 12), ("Egg tarts (2)", 10), ("Whole-wheat toast", 16), ("Ham & cheese sandwich", 18),
         ("Cinnamon roll", 15), ("Pork floss bun", 9), ("Baguette", 14)),
    ),
    Cuisine(
        "dumplings", vec(warmth=0.7, speed=0.6, indulgence=0.3, sharing=0.5, health=0.4, late_night=0.4,
                         breakfast=0.4),
        4, (0.5, 0.5, 0.0, 0.0), (6, 22),
        ("{surname}'s Dumpling House", "{adj} Dumpling King", "{place} Jiaozi"),
        ("Northeast", "Shandong", "Tianjin"),
        ("hand-wrapped every day", "juicy pork and cabbage fillings", "pan-fried potstickers",
         "soup dumplings that burst", "just like grandma's"),
        (("Pork & cabbage dumplings (15)", 22), ("Shrimp dumplings", 30), ("Pan-fried potstickers", 20),
         ("Wontons in chili oil", 18), ("Lamb dumplings", 26), ("Leek & egg dumplings", 18),
         ("Soup dumplings (xiaolongbao)", 24)),
    ),
    Cuisine(
        "crayfish", vec(warmth=0.3, refreshment=0.3, speed=0.1, indulgence=0.9, sharing=1.0, health=0.1,
                        late_night=0.9),
        2, (0.0, 0.1, 0.5, 0.4), (16, 27),
        ("{surname}'s Crayfish", "{place} Little Lobster", "{adj} Red Shell Crayfish"),
        ("Xuyi", "Qianjiang", "Wuhan"),
        ("spicy crayfish by the kilo", "garlic and thirteen-spice flavours", "crayfish and cold beer",
         "made for a night with friends"),
        (("Spicy crayfish (1 kg)", 128), ("Garlic crayfish", 128), ("Thirteen-spice crayfish", 138),
         ("Crayfish tails", 78), ("Grilled corn", 8), ("Edamame", 12), ("Cold beer (3)", 24)),
    ),
    Cuisine(
        "cakes", vec(refreshment=0.2, speed=0.2, indulgence=1.0, sharing=0.8, late_night=0.1, breakfast=0.1),
        2, (0.0, 0.2, 0.5, 0.3), (9, 22),
        ("{adj} Patisserie", "{surname}'s Cake Studio", "{place} Sweets"),
        ("Paris", "Tokyo", "Vienna"),
        ("whole cakes for every celebration", "cream cakes with fresh fruit", "tiramisu and mousse",
         "birthday candles on request"),
        (("Black forest cake", 168), ("Strawberry cream cake", 188), ("Tiramisu", 36), ("Mango mousse", 32),
         ("Cheesecake slice", 28), ("Birthday cake (8 inch)", 198), ("Macarons (6)", 48)),
    ),
    Cuisine(
        "burgers", vec(warmth=0.2, refreshment=0.1, speed=0.9, indulgence=0.8, sharing=0.3, health=0.1,
                       late_night=0.6, breakfast=0.2),
        4, (0.2, 0.6, 0.2, 0.0), (8, 25),
        ("{adj} Burger Joint", "{surname}'s Grill & Burgers", "{place} Burger Co."),
        ("Texas", "Brooklyn", "California"),
        ("smashed beef patties", "melted cheese and crispy bacon", "combo meals in minutes", "thick milkshakes"),
        (("Double cheeseburger", 32), ("Crispy chicken burger", 26), ("Bacon burger", 34), ("Fries", 12),
         ("Onion rings", 14), ("Milkshake", 18), ("Burger combo for two", 79)),
    ),
    Cuisine(
        "sushi", vec(refreshment=0.5, speed=0.4, indulgence=0.5, sharing=0.5, health=0.7, late_night=0.1),
        2, (0.0, 0.2, 0.5, 0.3), (11, 22),
        ("{adj} Sushi", "{place} Sushi Bar", "Sushi {surname}"),
        ("Tokyo", "Hokkaido", "Osaka"),
        ("fresh salmon flown in daily", "nigiri and rolls", "sashimi platters", "light and clean flavours"),
        (("Salmon nigiri", 36), ("California roll", 28), ("Tuna sashimi", 58), ("Eel rice bowl", 52),
         ("Sushi platter for two", 128), ("Miso soup", 8), ("Edamame", 12)),
    ),
    Cuisine(
        "pizza", vec(warmth=0.3, speed=0.5, indulgence=0.8, sharing=0.9, health=0.1, late_night=0.6),
        3, (0.0, 0.3, 0.5, 0.2), (10, 24),
        ("{adj} Pizza", "{surname}'s Pizzeria", "{place} Slice"),
        ("Napoli", "Chicago", "Roma"),
        ("stone-baked crusts", "extra cheese on request", "party combos", "wings and garlic bread on the side"),
        (("Margherita pizza", 58), ("Pepperoni pizza", 68), ("Durian pizza", 78), ("Seafood pizza", 88),
         ("Garlic bread", 18), ("Chicken wings", 28), ("Party pizza combo", 168)),
    ),
    Cuisine(
        "malatang", vec(warmth=0.9, speed=0.6, indulgence=0.5, sharing=0.2, health=0.2, late_night=0.5),
        5, (0.6, 0.4, 0.0, 0.0), (10, 26),
        ("{surname}'s Malatang", "{place} Spicy Pot", "{adj} Mala Bowl"),
        ("Sichuan", "Harbin", "Tianshui"),
        ("pick your own ingredients", "numbing, spicy broth", "priced by weight", "a hot bowl that warms you up"),
        (("Spicy malatang (by weight)", 24), ("Mild bone-broth malatang", 24), ("Beef balls", 8),
         ("Instant noodles", 4), ("Tofu puffs", 6), ("Enoki mushrooms", 6), ("Fish tofu", 7)),
    ),
    Cuisine(
        "fruit & juice", vec(refreshment=1.0, speed=0.6, indulgence=0.2, sharing=0.2, health=0.9, late_night=0.1,
                             breakfast=0.3),
        3, (0.3, 0.5, 0.2, 0.0), (9, 23),
        ("{adj} Fruit Bar", "{surname}'s Fruit Shop", "{place} Juicery"),
        ("Hainan", "Tropical", "Orchard"),
        ("cut fruit boxes", "fresh-pressed juices", "watermelon and mango in season", "chilled coconut water"),
        (("Mixed fruit box", 32), ("Watermelon slices", 18), ("Mango smoothie", 20), ("Fresh orange juice", 18),
         ("Coconut water", 15), ("Durian box", 68), ("Cut pineapple", 16)),
    ),
    Cuisine(
        "rice bowls", vec(warmth=0.5, refreshment=0.1, speed=1.0, indulgence=0.3, sharing=0.1, health=0.4,
                          late_night=0.2, breakfast=0.1),
        7, (0.7, 0.3, 0.0, 0.0), (9, 22),
        ("{surname}'s Rice Bowls", "{adj} Wok Kitchen", "{place} Fast Food"),
        ("Sichuan", "Hunan", "Canton"),
        ("home-style stir-fries over rice", "set meals with soup", "wok-fried to order", "big portions, small prices"),
        (("Kung pao chicken rice", 22), ("Braised pork rice", 20), ("Mapo tofu rice", 16), ("Beef and pepper rice", 26),
         ("Tomato egg rice", 15), ("Curry chicken rice", 22), ("Steamed rice", 2)),
    ),
    Cuisine(
        "steamed buns", vec(warmth=0.5, speed=0.9, indulgence=0.2, sharing=0.2, health=0.4, breakfast=1.0),
        3, (0.9, 0.1, 0.0, 0.0), (6, 13),
        ("{surname}'s Baozi", "{adj} Steamer Buns", "{place} Bun House"),
        ("Tianjin", "Shanghai", "Hangzhou"),
        ("fluffy buns straight from the steamer", "juicy pork fillings", "tea eggs and soy milk",
         "breakfast sets for the commute"),
        (("Pork bun", 3), ("Vegetable bun", 2.5), ("Red bean bun", 3), ("Soup dumplings (8)", 16), ("Soy milk", 4),
         ("Tea egg", 3), ("Sticky rice roll", 6)),
    ),
    Cuisine(
        "cold noodles", vec(refreshment=0.9, speed=0.7, indulgence=0.3, sharing=0.1, health=0.4, late_night=0.2),
        3, (0.7, 0.3, 0.0, 0.0), (10, 22),
        ("{surname}'s Liangpi", "{place} Cold Noodles", "{adj} Chilled Noodle Bar"),
        ("Shaanxi", "Korean", "Sichuan"),
        ("chilled noodles with sesame and chili", "cucumber and vinegar", "served cold", "sour plum drink on the side"),
        (("Cold skin noodles (liangpi)", 14), ("Sesame cold noodles", 15), ("Spicy cold rice noodles", 14),
         ("Korean cold noodles", 28), ("Cucumber salad", 8), ("Iced sour plum drink", 8), ("Chicken cold noodles", 22)),
    ),
)

SURNAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Zhou", "Wu", "Xu", "Sun", "Ma",
            "Zhu", "Hu", "Guo", "Lin", "He", "Gao", "Luo")
ADJECTIVES = ("Golden", "Lucky", "Happy", "Old", "Little", "Red", "Jade", "Sunny", "Corner", "Harbour", "Silver",
              "Green", "Morning", "Moonlight", "Lotus", "Panda", "Tiger", "Maple", "Bamboo", "Lantern")

CUE_PHRASES: dict[str, tuple[str, ...]] = {
    "warmth": ("warming", "piping hot", "perfect for a cold day", "keeps you warm"),
    "refreshment": ("iced", "refreshing", "beat the heat", "served chilled"),
    "speed": ("quick lunch", "ready in 15 minutes", "fast delivery", "grab-and-go"),
    "indulgence": ("treat yourself", "indulgent", "cheesy and crispy", "comfort food"),
    "sharing": ("family-size", "sharing platters", "party packs", "portions for the whole table"),
    "health": ("light", "low-calorie", "fresh and healthy", "no MSG"),
    "late_night": ("midnight snacks", "for night owls", "late-night favourite"),
    "breakfast": ("breakfast sets", "morning special", "start your day right"),
}
"""Wording that carries a semantic cue, picked more often the stronger the cuisine's attribute."""

PRICE_PHRASES: dict[int, tuple[str, ...]] = {
    1: ("budget-friendly", "student prices", "great value"),
    2: ("fair prices", "good value for money"),
    3: ("premium ingredients", "a little pricier, worth it"),
    4: ("luxury dining at home", "chef's signature menu", "top-grade ingredients"),
}
OPENINGS = ("Welcome to {name}:", "{name} serves", "At {name} you get", "{name} —", "Since {year}, {name} has served")


# ---------------------------------------------------------------------------- users


@dataclass(frozen=True)
class Persona:
    name: str
    noun: str  # for the profile text
    share: float  # share of users
    age: tuple[int, int]
    home: dict[str, float]  # district type -> weight
    work: dict[str, float]  # district type -> weight ("same" means the home district)
    price_beta: tuple[float, float]  # Beta(a, b) of price sensitivity
    taste: dict[str, float] = field(default_factory=dict)  # cuisine -> taste offset
    night: float = 1.0  # multiplier of late-night request weight
    morning: float = 1.0  # multiplier of breakfast request weight


PERSONAS: tuple[Persona, ...] = (
    Persona("office", "office worker", 0.40, (23, 45), {"residential": 0.7, "suburb": 0.3}, {"office": 1.0},
            (3, 3), {"bento": 0.4, "coffee": 0.4, "rice bowls": 0.3, "salads": 0.2, "noodle soup": 0.2}),
    Persona("student", "university student", 0.20, (18, 24), {"university": 1.0}, {"same": 1.0},
            (5, 2), {"bubble tea": 0.5, "malatang": 0.4, "fried chicken": 0.3, "BBQ skewers": 0.2, "sushi": -0.3,
                     "cakes": -0.2}, night=1.6, morning=0.6),
    Persona("family", "parent", 0.20, (30, 55), {"residential": 0.6, "suburb": 0.4}, {"office": 1.0},
            (3, 3), {"dumplings": 0.3, "hotpot": 0.3, "pizza": 0.2, "breakfast congee": 0.2, "cakes": 0.2,
                     "BBQ skewers": -0.2}, night=0.4, morning=1.3),
    Persona("night_owl", "young professional who loves going out", 0.10, (22, 35),
            {"nightlife": 0.5, "residential": 0.5}, {"office": 1.0},
            (2, 3), {"BBQ skewers": 0.5, "crayfish": 0.5, "fried chicken": 0.3, "burgers": 0.2,
                     "breakfast congee": -0.3}, night=3.0, morning=0.4),
    Persona("freelancer", "freelancer working from home", 0.10, (24, 40),
            {"residential": 0.6, "nightlife": 0.2, "suburb": 0.2}, {"office": 1.0},
            (2, 2), {"coffee": 0.3, "noodle soup": 0.2, "salads": 0.2}, night=1.3),
)

# P(where | persona, workday?, time slot): where ∈ (home, work, leisure). Rows are time slots in
# TIME_SLOTS order. Students live and study in the same district, so for them work ≡ home.
WHERE_P: dict[str, dict[bool, tuple[tuple[float, float, float], ...]]] = {
    "office": {
        True: ((0.4, 0.6, 0.0), (0.1, 0.88, 0.02), (0.1, 0.88, 0.02), (0.72, 0.18, 0.1), (0.8, 0.0, 0.2)),
        False: ((0.9, 0.0, 0.1), (0.85, 0.0, 0.15), (0.8, 0.0, 0.2), (0.8, 0.0, 0.2), (0.65, 0.0, 0.35)),
    },
    "student": {
        True: ((0.95, 0.0, 0.05), (0.95, 0.0, 0.05), (0.9, 0.0, 0.1), (0.85, 0.0, 0.15), (0.75, 0.0, 0.25)),
        False: ((0.95, 0.0, 0.05), (0.85, 0.0, 0.15), (0.8, 0.0, 0.2), (0.75, 0.0, 0.25), (0.65, 0.0, 0.35)),
    },
    "family": {
        True: ((0.9, 0.1, 0.0), (0.5, 0.5, 0.0), (0.5, 0.5, 0.0), (0.92, 0.03, 0.05), (0.95, 0.0, 0.05)),
        False: ((0.95, 0.0, 0.05), (0.9, 0.0, 0.1), (0.85, 0.0, 0.15), (0.85, 0.0, 0.15), (0.9, 0.0, 0.1)),
    },
    "night_owl": {
        True: ((0.7, 0.3, 0.0), (0.3, 0.65, 0.05), (0.3, 0.6, 0.1), (0.55, 0.15, 0.3), (0.4, 0.0, 0.6)),
        False: ((0.9, 0.0, 0.1), (0.7, 0.0, 0.3), (0.6, 0.0, 0.4), (0.5, 0.0, 0.5), (0.3, 0.0, 0.7)),
    },
    "freelancer": {
        True: ((0.95, 0.05, 0.0), (0.75, 0.2, 0.05), (0.7, 0.2, 0.1), (0.85, 0.0, 0.15), (0.8, 0.0, 0.2)),
        False: ((0.95, 0.0, 0.05), (0.85, 0.0, 0.15), (0.8, 0.0, 0.2), (0.8, 0.0, 0.2), (0.7, 0.0, 0.3)),
    },
}

LEISURE_DISTRICT_WEIGHT = {"nightlife": 3.0, "residential": 1.0, "suburb": 0.4}
"""Where people go when they order away from home and work (friends, bars)."""

HOTEL_DISTRICT_WEIGHT = {"office": 1.0, "nightlife": 1.0, "suburb": 0.6}
"""Hotels are in business, nightlife and airport-suburb districts."""

# Requests per hour (0..23) on workdays and days off, before persona multipliers.
HOUR_WEIGHT_WORKDAY = (0.8, 0.5, 0.35, 0.25, 0.2, 0.25, 0.9, 2.2, 2.6, 1.4, 2.4, 8.0, 9.0, 3.8, 2.0, 2.6, 2.0,
                       4.0, 7.5, 6.5, 3.5, 2.6, 2.6, 1.6)
HOUR_WEIGHT_DAYOFF = (1.2, 0.8, 0.5, 0.35, 0.25, 0.25, 0.5, 1.2, 2.0, 2.4, 3.0, 7.0, 8.5, 4.5, 3.0, 3.4, 2.6,
                      4.2, 8.0, 7.0, 4.0, 3.2, 3.2, 2.2)


# ---------------------------------------------------------------------------- scene values

TIME_SLOTS = ("breakfast", "lunch", "afternoon tea", "dinner", "late night")
"""Time slot of each hour: breakfast 6-9, lunch 10-13, afternoon tea 14-16, dinner 17-20, late night 21-5."""


def _slot_of(hour: int) -> int:
    for slot, (first, last) in enumerate(((6, 9), (10, 13), (14, 16), (17, 20))):
        if first <= hour <= last:
            return slot
    return 4  # late night, 21:00-05:59


HOUR_SLOT: tuple[int, ...] = tuple(_slot_of(h) for h in range(24))

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_TYPES = ("weekday", "weekend", "public holiday")
LOCATION_TYPES = ("home", "office", "campus", "entertainment venue", "friend's home", "hotel")


@dataclass(frozen=True)
class Holiday:
    name: str
    month: int
    day: int
    days: int  # length in days
    public: bool  # a day off for everyone
    attrs: tuple[float, ...]


# 2023-10-01 .. 2024-09-29, the real dates of that year. Single-day holidays listed after
# multi-day ones win when they overlap (Valentine's Day fell inside the 2024 Spring Festival).
HOLIDAYS: tuple[Holiday, ...] = (
    Holiday("National Day holiday", 10, 1, 7, True, vec(sharing=0.6, indulgence=0.5, speed=-0.3)),
    Holiday("Christmas", 12, 24, 2, False, vec(indulgence=0.9, sharing=0.6)),
    Holiday("New Year's Day", 1, 1, 1, True, vec(sharing=0.7, indulgence=0.6, late_night=0.2)),
    Holiday("exam week", 1, 8, 7, False, vec(speed=0.8, late_night=0.6, indulgence=0.3, health=-0.2, breakfast=0.2)),
    Holiday("Spring Festival", 2, 10, 7, True, vec(sharing=1.1, indulgence=0.6, warmth=0.5, speed=-0.4)),
    Holiday("Valentine's Day", 2, 14, 1, False, vec(indulgence=1.2, sharing=0.6, health=-0.2)),
    Holiday("Lantern Festival", 2, 24, 1, False, vec(sharing=0.8, warmth=0.5, indulgence=0.5)),
    Holiday("Labour Day holiday", 5, 1, 5, True, vec(sharing=0.5, indulgence=0.5, speed=-0.2)),
    Holiday("Dragon Boat Festival", 6, 10, 1, True, vec(sharing=0.6, indulgence=0.3, warmth=0.2)),
    Holiday("exam week", 6, 24, 7, False, vec(speed=0.8, late_night=0.6, indulgence=0.3, health=-0.2, breakfast=0.2)),
    # test period (from about 6 August): never seen in training, close to seen ones
    Holiday("Qixi Festival", 8, 10, 1, False, vec(indulgence=1.1, sharing=0.6, health=-0.2)),
    Holiday("Mid-Autumn Festival", 9, 17, 1, True, vec(sharing=1.0, indulgence=0.6, warmth=0.3, speed=-0.3)),
)
HOLIDAY_VALUES = ("none",) + tuple(dict.fromkeys(h.name for h in HOLIDAYS))

START_DATE = (2023, 10, 1)
"""The world's year starts on a Sunday, 1 October 2023."""

WEATHER: dict[str, tuple[float, ...]] = {
    "sunny": vec(refreshment=0.3, health=0.2),
    "cloudy": vec(),
    "overcast": vec(warmth=0.2),
    "windy": vec(warmth=0.3),
    "light rain": vec(warmth=0.5, indulgence=0.2),
    "heavy rain": vec(warmth=0.9, indulgence=0.4, sharing=0.2),
    "thunderstorm": vec(warmth=0.9, indulgence=0.5, sharing=0.3, late_night=0.1),
    "snow": vec(warmth=0.9, sharing=0.4, indulgence=0.3, refreshment=-0.3),
    "haze": vec(health=0.4, warmth=0.2, refreshment=-0.2),
    "heatwave": vec(refreshment=0.9, warmth=-0.7, health=0.3, indulgence=0.2),
    # test only: a storm that keeps everyone indoors, the big brother of a thunderstorm
    "typhoon": vec(warmth=1.2, indulgence=0.6, sharing=0.4, late_night=0.2),
}
WEATHER_DEMAND = {"light rain": 1.1, "heavy rain": 1.25, "thunderstorm": 1.25, "snow": 1.3, "haze": 1.1,
                  "heatwave": 1.15, "typhoon": 1.4}
"""Bad weather means more delivery orders (request-count multiplier; 1 when absent)."""

TEMPERATURE_BANDS: tuple[tuple[str, float, tuple[float, ...]], ...] = (
    # (value, upper bound °C, attributes)
    ("freezing (below 0°C)", 0.0, vec(warmth=0.8, refreshment=-0.5)),
    ("cold (0-10°C)", 10.0, vec(warmth=0.6, refreshment=-0.4)),
    ("cool (10-18°C)", 18.0, vec(warmth=0.2)),
    ("mild (18-25°C)", 25.0, vec(health=0.1)),
    ("warm (25-30°C)", 30.0, vec(refreshment=0.4, warmth=-0.3)),
    ("hot (30-35°C)", 35.0, vec(refreshment=0.6, warmth=-0.4)),
    ("scorching (35-40°C)", 40.0, vec(refreshment=0.8, warmth=-0.6)),
    # test only
    ("extreme heat (above 40°C)", 99.0, vec(refreshment=1.0, warmth=-0.8, health=0.2)),
)

TIME_SLOT_ATTRS = {
    "breakfast": vec(breakfast=1.2, speed=0.5, warmth=0.2, indulgence=-0.3, late_night=-0.6, sharing=-0.3),
    "lunch": vec(speed=0.8, health=0.2, breakfast=-0.6, late_night=-0.6),
    "afternoon tea": vec(refreshment=0.6, indulgence=0.6, sharing=0.2, speed=-0.2, breakfast=-0.4, late_night=-0.4),
    "dinner": vec(sharing=0.6, warmth=0.3, indulgence=0.2, breakfast=-0.7, late_night=-0.2),
    "late night": vec(late_night=1.3, indulgence=0.5, health=-0.4, breakfast=-0.8, speed=-0.2),
}
HOUR_SCALE = 0.35
"""An hour's vector is this share of its time slot's, plus a little extra at the extremes."""

WEEKDAY_ATTRS = {
    "Monday": vec(speed=0.2, health=0.2),
    "Tuesday": vec(speed=0.2),
    "Wednesday": vec(speed=0.1),
    "Thursday": vec(speed=0.1, indulgence=0.1),
    "Friday": vec(indulgence=0.4, late_night=0.3, sharing=0.3),
    "Saturday": vec(indulgence=0.4, sharing=0.5, late_night=0.4, speed=-0.3),
    "Sunday": vec(sharing=0.5, health=0.1, breakfast=0.1, speed=-0.2),
}
DAY_TYPE_ATTRS = {
    "weekday": vec(speed=0.3),
    "weekend": vec(sharing=0.3, indulgence=0.3, speed=-0.2),
    "public holiday": vec(sharing=0.6, indulgence=0.4, speed=-0.3),
}
DISTRICT_TYPE_ATTRS = {
    "office": vec(speed=0.5, health=0.2),
    "residential": vec(sharing=0.3),
    "university": vec(speed=0.2, indulgence=0.2, late_night=0.2),
    "nightlife": vec(late_night=0.6, indulgence=0.4, sharing=0.3),
    "suburb": vec(sharing=0.4, warmth=0.1),
}
DISTRICT_SCALE = 0.35
"""A district's vector is this share of its type's plus its own small offset."""

LOCATION_ATTRS = {
    "home": vec(sharing=0.4, health=0.2, speed=-0.2),
    "office": vec(speed=0.9, health=0.3, indulgence=-0.3, sharing=-0.2),
    "campus": vec(speed=0.4, indulgence=0.3, late_night=0.2),
    "entertainment venue": vec(late_night=0.6, indulgence=0.7, sharing=0.7),
    "friend's home": vec(sharing=0.8, indulgence=0.5),
    # test only (the app's hotel delivery launches late): close to a night out at a friend's
    "hotel": vec(indulgence=0.6, late_night=0.5, sharing=0.3, speed=0.2),
}

TEST_ONLY: dict[str, tuple[str, ...]] = {
    "holiday": ("Qixi Festival", "Mid-Autumn Festival"),
    "weather": ("typhoon",),
    "temperature": ("extreme heat (above 40°C)",),
    "location_type": ("hotel",),
}
"""Scene values the generator keeps out of the train period (hotel delivery launches late in valid)."""

FEATURE_SCALE: dict[str, float] = {
    "time_slot": 0.35, "hour": 0.35, "weekday": 0.4, "day_type": 0.3, "holiday": 2.4, "weather": 2.6,
    "temperature": 1.3, "district": 0.4, "district_type": 0.4, "location_type": 1.8,
    "landmark": 1.6, "event": 2.2,
}
"""How much each scene feature matters (its vectors say in which direction); 1 when absent."""

SCENE_FEATURES: list[SceneFeature] = [
    SceneFeature("time_slot", "str", "time slot: {value}", "Meal period of the request hour."),
    SceneFeature("hour", "int", "hour: {value}:00", "Hour of day of the request, 0-23."),
    SceneFeature("weekday", "str", "day of week: {value}", "Monday .. Sunday."),
    SceneFeature("day_type", "str", "day type: {value}", "weekday, weekend or public holiday."),
    SceneFeature("holiday", "str", "holiday: {value}", "Festival or special period of the day ('none' if none)."),
    SceneFeature("weather", "str", "weather: {value}", "City-wide weather of the day."),
    SceneFeature("temperature", "str", "temperature: {value}", "Temperature band of the day."),
    SceneFeature("district", "str", "district: {value}", "District the request comes from."),
    SceneFeature("district_type", "str", "district type: {value}", "Kind of that district."),
    SceneFeature("location_type", "str", "location: {value}", "Kind of place the user orders to."),
    SceneFeature("landmark", "str", "nearby landmark: {value}", "Nearest named place to the delivery address."),
    SceneFeature("event", "str", "local event: {value}", "Event under way near the request ('none' most of the time)."),
]
LONG_TAIL_FEATURES = ("landmark", "event")
"""Scene features whose values are many, Zipf-popular, named instances, drawn per world (see synth.py)."""


# ---------------------------------------------------------------------------- long-tail scene features (world v2)
# Nearby landmarks (points of interest) and local events: many values, Zipf-distributed
# popularity, named in words that say what they are. A value's hidden attributes are its
# *type's* vector plus per-instance noise (LONG_TAIL_NOISE); new landmarks open over time and
# events are dated, so some values first appear in valid and some only in test.


@dataclass(frozen=True)
class LandmarkType:
    name: str
    districts: tuple[str, ...]  # district kinds it can be in
    locations: tuple[str, ...]  # location types whose requests it can be nearest to
    weight: float  # how common it is
    names: tuple[str, ...]  # templates: {district} {place} {surname} {n} {exit} {side} {brand}
    attrs: tuple[float, ...]


LANDMARK_TYPES: tuple[LandmarkType, ...] = (
    LandmarkType("stadium", ("nightlife", "suburb", "residential", "university"), ("entertainment venue", "friend's home", "home"), 0.5,
                 ("{side} gate of {place} Stadium", "{place} Sports Centre, {side} stand", "{place} Arena, gate {n}"),
                 vec(sharing=0.8, indulgence=0.7, late_night=0.5, refreshment=0.2)),
    LandmarkType("hospital", ("residential", "office", "suburb"), ("home", "office", "friend's home"), 0.8,
                 ("{place} Children's Hospital", "{place} People's Hospital, inpatient building", "{place} Maternity Hospital",
                  "{place} Hospital of Traditional Medicine", "{place} General Hospital, emergency department"),
                 vec(health=0.9, speed=0.6, warmth=0.3, indulgence=-0.4, late_night=0.1)),
    LandmarkType("campus gate", ("university",), ("campus",), 1.2,
                 ("{side} gate of {place} University", "{place} Polytechnic, {side} gate", "{place} Medical College, {side} gate",
                  "{place} University dormitory {n}"),
                 vec(speed=0.6, late_night=0.6, indulgence=0.3)),
    LandmarkType("library", ("university",), ("campus",), 0.4,
                 ("{place} University library", "{place} University study hall {n}"),
                 vec(speed=0.5, late_night=0.4, health=0.2, breakfast=0.2)),
    LandmarkType("metro station", ("office", "residential", "university", "nightlife", "suburb"),
                 ("home", "office", "campus", "friend's home", "entertainment venue"), 1.4,
                 ("{place} metro station, exit {exit}", "{place} Road metro station, exit {exit}", "{place} interchange station"),
                 vec(speed=0.9, breakfast=0.6, sharing=-0.2)),
    LandmarkType("train station", ("office", "suburb"), ("office", "hotel", "home"), 0.2,
                 ("{place} railway station, {side} square", "{place} high-speed railway station"),
                 vec(speed=1.0, breakfast=0.3, warmth=0.2, sharing=-0.2)),
    LandmarkType("airport terminal", ("suburb",), ("hotel", "office", "home"), 0.1,
                 ("{place} Airport Terminal {n} departures", "{place} Airport arrivals hall"),
                 vec(speed=1.0, breakfast=0.4, refreshment=0.2, sharing=-0.3)),
    LandmarkType("office tower", ("office",), ("office",), 1.8,
                 ("{place} Tower {n}", "{brand} Building, {place}", "{place} International Finance Centre, tower {n}",
                  "{place} Software Park building {n}"),
                 vec(speed=0.9, health=0.3, indulgence=-0.2, sharing=-0.2)),
    LandmarkType("exhibition centre", ("office", "suburb"), ("office", "hotel"), 0.3,
                 ("{place} International Exhibition Centre, hall {n}", "{place} Convention Centre"),
                 vec(speed=0.7, sharing=0.4, health=0.1)),
    LandmarkType("night market", ("nightlife", "residential"), ("entertainment venue", "home", "friend's home"), 0.5,
                 ("{place} night market", "{place} night market, food alley {n}", "{place} Street snack market"),
                 vec(late_night=1.0, indulgence=0.7, sharing=0.3, health=-0.3)),
    LandmarkType("bar street", ("nightlife",), ("entertainment venue",), 0.8,
                 ("{place} Lane bars", "{brand} KTV, {place}", "{place} live music bar", "{place} Brewery taproom"),
                 vec(late_night=0.9, sharing=0.8, indulgence=0.6, health=-0.3)),
    LandmarkType("cinema", ("nightlife", "residential", "office"), ("entertainment venue", "home", "friend's home"), 0.5,
                 ("{brand} IMAX cinema, {place}", "{place} Cineplex", "{place} drive-in cinema"),
                 vec(indulgence=0.6, late_night=0.5, sharing=0.4, refreshment=0.2)),
    LandmarkType("shopping mall", ("office", "residential", "nightlife", "suburb"),
                 ("home", "friend's home", "entertainment venue", "office"), 0.9,
                 ("{brand} Plaza, {place}", "{place} Shopping Mall", "{place} Outlet Village", "{brand} City, {place}"),
                 vec(indulgence=0.5, sharing=0.4, refreshment=0.3)),
    LandmarkType("hotel", ("office", "nightlife", "suburb"), ("hotel", "office", "entertainment venue"), 0.6,
                 ("{brand} Hotel {place}", "{place} Grand Hotel", "{brand} Inn, {place}", "{place} Serviced Apartments"),
                 vec(indulgence=0.6, late_night=0.5, sharing=0.2, speed=0.2)),
    LandmarkType("park", ("residential", "suburb", "university"), ("home", "friend's home", "campus"), 0.7,
                 ("{place} Park, {side} entrance", "{place} Wetland Park", "{place} riverside greenway", "{place} Botanical Garden"),
                 vec(refreshment=0.6, health=0.7, sharing=0.2)),
    LandmarkType("gym", ("office", "residential"), ("office", "home"), 0.5,
                 ("{brand} 24h fitness club, {place}", "{place} swimming pool", "{place} yoga studio"),
                 vec(health=1.0, refreshment=0.4, indulgence=-0.5)),
    LandmarkType("school", ("residential", "suburb"), ("home", "friend's home"), 0.6,
                 ("{place} No. {n} Middle School", "{place} Primary School, {side} gate", "{place} Kindergarten"),
                 vec(breakfast=0.7, speed=0.4, health=0.3, late_night=-0.3)),
    LandmarkType("residential compound", ("residential", "suburb", "nightlife", "university"),
                 ("home", "friend's home", "campus"), 2.6,
                 ("{place} Garden, block {n}", "{place} Court, building {n}", "{brand} Residences, {place}",
                  "{place} Villas, lane {n}", "{place} staff apartments, block {n}"),
                 vec(sharing=0.5, health=0.2, warmth=0.2)),
    LandmarkType("co-working space", ("office", "nightlife"), ("office",), 0.4,
                 ("{brand} co-working space, {place}", "{place} startup incubator, floor {n}"),
                 vec(speed=0.7, late_night=0.4, indulgence=0.2, breakfast=0.2)),
)
"""Kinds of nearby landmark, where they are, whose requests they are near, and what they mean."""

LANDMARK_PLACES = ("Riverside", "Maple", "Lakeview", "Sunrise", "Golden Bay", "Pearl", "Harmony", "Oriental",
                   "Jade", "Willow", "Phoenix", "Crescent", "Evergreen", "Peony", "Cedar", "Silver Lake",
                   "Orchid", "Harbour", "Zhongshan", "Century", "Starlight", "Bamboo Grove", "Hillside", "Lotus Pond")
LANDMARK_BRANDS: dict[str, tuple[str, ...]] = {
    "hotel": ("Hilton", "Hyatt", "Home Inn", "Atour", "Raffles", "Ascott", "Starway", "Hanting"),
    "shopping mall": ("Wanda", "Joy City", "Longfor", "CapitaLand", "Poly", "Raffles City"),
    "gym": ("Super Fitness", "Gold's", "Pure Yoga", "Anytime"),
    "co-working space": ("WeWork", "Naked Hub", "UCommune"),
    "residential compound": ("Vanke", "Sunac", "Longfor", "Poly", "Country Garden"),
    "cinema": ("Wanda", "CGV", "Broadway", "Jinyi"),
    "bar street": ("Melody", "Party World", "Haoledi"),
    "office tower": ("China Resources", "Tencent", "Sinopec", "Huawei", "Ping An"),
}
"""Brand names per landmark type (``{brand}`` in its templates)."""
LANDMARK_SIDES = ("north", "south", "east", "west")
LANDMARK_EXITS = ("A", "B", "C", "D", "E")


@dataclass(frozen=True)
class EventType:
    name: str
    venues: tuple[str, ...]  # landmark types it takes place at ("" = the district itself)
    districts: tuple[str, ...]  # district kinds
    weight: float
    days: tuple[int, int]  # duration in (sampled) days, min..max
    hours: tuple[int, int]  # active from hour .. to hour (inclusive; > 23 wraps past midnight)
    months: tuple[int, ...]  # months it happens in (empty: any)
    names: tuple[str, ...]  # templates: {venue} {district} {artist} {team} {team2} {game} {industry} {food} {uni}
    attrs: tuple[float, ...]
    recurring: bool = False  # one name, many days (a weekly market, a league team's home games)


EVENT_TYPES: tuple[EventType, ...] = (
    EventType("concert", ("stadium", "park", "exhibition centre"), ("nightlife", "suburb", "residential", "university", "office"),
              1.6, (1, 1), (16, 24), (), ("{artist} concert tonight at {venue}", "{artist} live at {venue}",
                                          "{artist} world tour, {venue}"),
              vec(sharing=0.6, indulgence=0.8, late_night=0.7, refreshment=0.2)),
    EventType("football match", ("stadium",), ("nightlife", "suburb", "residential", "university"), 1.2, (1, 1), (13, 23),
              (3, 4, 5, 6, 7, 8, 9, 10, 11), ("{team} vs {team2} football match at {venue}", "{team} home game at {venue}",
                                               "{team} vs {team2}, cup quarter-final at {venue}"),
              vec(sharing=0.9, indulgence=0.7, late_night=0.4, warmth=0.1)),
    EventType("marathon", ("park", ""), ("residential", "suburb", "office"), 0.5, (1, 1), (5, 13), (3, 4, 10, 11, 12),
              ("{district} marathon", "{venue} half marathon", "{district} 10k charity run"),
              vec(refreshment=0.8, health=0.8, speed=0.2, indulgence=-0.3, breakfast=0.3)),
    EventType("exam", ("campus gate", "school", "library"), ("university", "residential"), 1.0, (1, 2), (6, 19),
              (1, 4, 6, 10, 12), ("national college entrance exam at {venue}", "civil service exam at {venue}",
                                   "postgraduate entrance exam at {venue}", "IELTS test day at {venue}"),
              vec(speed=0.8, late_night=0.5, breakfast=0.4, indulgence=0.2, health=-0.1)),
    EventType("trade fair", ("exhibition centre",), ("office", "suburb"), 1.0, (2, 3), (8, 19), (),
              ("{industry} trade fair week at {venue}", "{industry} expo at {venue}", "{industry} summit at {venue}"),
              vec(speed=0.8, sharing=0.4, health=0.2, breakfast=0.2)),
    EventType("food festival", ("night market", "shopping mall", "park"), ("nightlife", "residential", "suburb"), 1.0, (2, 3),
              (11, 23), (), ("{food} festival at {venue}", "{food} and beer festival at {venue}", "{food} week at {venue}"),
              vec(indulgence=0.9, sharing=0.6, late_night=0.3, health=-0.3)),
    EventType("esports final", ("stadium", "exhibition centre", "cinema"), ("nightlife", "university", "office", "suburb"),
              0.6, (1, 2), (14, 25), (), ("{game} esports final at {venue}", "{game} championship watch party at {venue}"),
              vec(late_night=0.9, indulgence=0.7, sharing=0.4, speed=0.3)),
    EventType("graduation day", ("campus gate",), ("university",), 0.6, (1, 1), (9, 21), (6, 7),
              ("graduation day at {uni}", "{uni} graduation ceremony"),
              vec(sharing=0.9, indulgence=0.7, health=-0.1)),
    EventType("music festival", ("park", "stadium"), ("suburb", "residential", "nightlife"), 0.5, (2, 2), (13, 24),
              (4, 5, 6, 7, 8, 9, 10), ("{artist} music festival at {venue}", "{venue} summer music festival"),
              vec(sharing=0.6, indulgence=0.7, refreshment=0.5, late_night=0.6)),
    EventType("night run", ("park", ""), ("residential", "nightlife", "university"), 0.3, (1, 1), (18, 23), (5, 6, 7, 8, 9),
              ("{venue} night run", "{district} glow night run"),
              vec(refreshment=0.7, health=0.7, late_night=0.3, indulgence=-0.2)),
    EventType("book fair", ("exhibition centre", "library", "shopping mall"), ("office", "university", "residential"), 0.3,
              (2, 3), (9, 20), (), ("{district} book fair at {venue}", "children's book fair at {venue}"),
              vec(health=0.3, speed=0.3, refreshment=0.2, breakfast=0.1)),
    EventType("farmers' market", ("park", ""), ("residential", "suburb"), 0.5, (1, 1), (7, 14), (),
              ("weekend farmers' market at {venue}",), vec(health=0.8, refreshment=0.3, breakfast=0.4, sharing=0.3),
              recurring=True),
    EventType("league home game", ("stadium",), ("nightlife", "suburb", "residential", "university"), 0.5, (1, 1),
              (14, 23), (), ("{team} league home game at {venue}",),
              vec(sharing=0.9, indulgence=0.7, late_night=0.4, warmth=0.1), recurring=True),
)
"""Kinds of local event, where and when they happen, and what they mean."""

EVENT_ARTISTS = ("Jay Lin", "Silver Moon", "Midnight Echo", "NOVA", "G.E.M. Tang", "Mayday Riders", "Faye Song",
                 "The Paper Kites", "Blue Lantern", "Leo Zhou", "Sakura Drive", "Red Dune", "Luna Park", "Eason Ho",
                 "Neon Tigers", "Aurora Chen", "Iron Orchid", "The Night Ferry", "Coco Wei", "Jade Harbour")
EVENT_TEAMS = ("Riverside FC", "Harbour City United", "Phoenix Rovers", "Maple Athletic", "Golden Bay Dragons",
               "Lakeview Wanderers", "Jade Tigers", "Oriental Stars", "Century Eagles", "Willow Town")
EVENT_GAMES = ("Legends Arena", "Honor of Kings", "Valorant Masters", "Dota Cup", "PUBG Mobile League", "StarStrike")
EVENT_INDUSTRIES = ("auto", "consumer electronics", "furniture", "tea", "wine and spirits", "robotics",
                    "medical devices", "textile", "new energy", "pet products", "game developers", "jewellery")
EVENT_FOODS = ("crayfish", "hotpot", "BBQ", "street food", "hairy crab", "dumpling", "durian", "seafood", "dessert",
               "noodle")

LONG_TAIL_NOISE = 0.12
"""Per-instance noise (sd per dimension) added to a landmark's or event's type vector (before FEATURE_SCALE)."""

LANDMARK_ZIPF_S = 2.0
"""Zipf exponent of landmark popularity: the landmark at popularity rank r weighs r^-LANDMARK_ZIPF_S."""
EVENT_ZIPF_S = 0.5
"""Zipf exponent of event reach: the event at rank r reaches EVENT_REACH·r^-EVENT_ZIPF_S of its district's requests."""
