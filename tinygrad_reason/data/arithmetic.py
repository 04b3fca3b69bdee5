"""Multi-step arithmetic word problems in the style of GSM8K, generated from story templates.

A problem is a running quantity (apples in a shop, passengers on a bus, dollars in a piggy
bank, ...) changed by a chain of operations. Each operation is one sentence of the story
and one or two solution lines, and every solution line carries one GSM8K-style calculator
annotation, e.g. ``After the sales, 24 - 5 = <<24-5=19>>19 pens are left.``

Operations (``n_steps`` counts solution lines, i.e. annotations):

=========  =====  ===================================================
add        1      v + k
sub        1      v - k            (result stays >= 1)
mul        1      v * k            (k in 2..max_factor)
div        1      v / k            (only when k divides v exactly)
packs_add  2      k * m, then v + k*m
packs_sub  2      k * m, then v - k*m
=========  =====  ===================================================

Every intermediate value is an integer in ``[1, value_cap]`` (``value_cap`` defaults to
``10 * max_value``). Operands of + and - and the starting value are at most ``max_value``;
factors and divisors are at most ``max_factor``. With ``distractors=p`` each story
sentence is followed, with probability ``p``, by an irrelevant sentence holding a number.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from .records import Record, derive_seed, make_rng

__all__ = ["generate_arithmetic", "TEMPLATES", "OPS"]

OPS = ("add", "sub", "mul", "div", "packs_add", "packs_sub")
_OP_STEPS = {"add": 1, "sub": 1, "mul": 1, "div": 1, "packs_add": 2, "packs_sub": 2}
_OP_WEIGHTS = {"add": 1.0, "sub": 1.0, "mul": 1.0, "div": 1.5, "packs_add": 0.8, "packs_sub": 0.8}

NAMES = [
    ("Maria", "she"), ("James", "he"), ("Aisha", "she"), ("Tom", "he"), ("Lena", "she"),
    ("Carlos", "he"), ("Priya", "she"), ("Kenji", "he"), ("Olivia", "she"), ("Mateo", "he"),
    ("Fatima", "she"), ("Noah", "he"), ("Sofia", "she"), ("Liam", "he"), ("Amara", "she"),
    ("Ivan", "he"), ("Mei", "she"), ("Omar", "he"), ("Grace", "she"), ("Diego", "he"),
    ("Hannah", "she"), ("Yusuf", "he"), ("Chloe", "she"), ("Ravi", "he"), ("Zoe", "she"),
    ("Samuel", "he"), ("Nadia", "she"), ("Felix", "he"), ("Elena", "she"), ("Kofi", "he"),
]

_TIMES = {2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times",
          7: "seven times", 8: "eight times", 9: "nine times", 10: "ten times"}

# Each template: items [(singular, plural)], containers [(singular, plural)], money flag,
# start sentences, per-op lists of (story sentence, solution line[, second solution line]),
# question sentences. Placeholders: {name} {He} {he} {His} {his}, {v_items} {k_items}
# {m_items} (number + noun), {items} (plural noun), {k} {m}, {k_conts} {cont} {conts},
# {times}, {calc} (one annotated calculation), {calc1} {calc2} (for the two-step ops).
TEMPLATES: dict[str, dict[str, Any]] = {
    "shop": {
        "items": [("apple", "apples"), ("pen", "pens"), ("notebook", "notebooks"),
                  ("candle", "candles"), ("mug", "mugs"), ("scarf", "scarves")],
        "containers": [("box", "boxes"), ("crate", "crates"), ("carton", "cartons")],
        "start": ["{name} runs a small shop that has {v_items} in stock.",
                  "{name}'s shop starts the week with {v_items}."],
        "add": [("A delivery brings {k_items} more.", "After the delivery the shop has {calc} {items}."),
                ("{He} buys {k} more {items} from a supplier.", "Buying more gives {calc} {items}.")],
        "sub": [("{He} sells {k_items} to customers.", "After the sales, {calc} {items} are left."),
                ("{He} finds {k_items} damaged and throws them away.", "Without the damaged ones, {calc} {items} remain.")],
        "mul": [("A big order arrives and the stock becomes {times} as large.", "The stock grows to {calc} {items}.")],
        "div": [("{He} splits the {items} equally into {k_conts} and keeps only one {cont}, giving the rest away.",
                 "One {cont} holds {calc} {items}.")],
        "packs_add": [("{He} also receives {k_conts} with {m_items} in each.",
                       "The {conts} hold {calc1} {items}.", "Now the shop has {calc2} {items}.")],
        "packs_sub": [("A customer buys {k_conts} of {m_items} each.",
                       "The customer takes {calc1} {items}.", "The shop is left with {calc2} {items}.")],
        "question": ["How many {items} does the shop have at the end?",
                     "How many {items} are in stock now?"],
    },
    "farm": {
        "items": [("chicken", "chickens"), ("sheep", "sheep"), ("goat", "goats"),
                  ("cow", "cows"), ("duck", "ducks"), ("rabbit", "rabbits")],
        "containers": [("pen", "pens"), ("barn", "barns"), ("field", "fields")],
        "start": ["A farmer named {name} has {v_items}.", "{name} keeps {v_items} on {his} farm."],
        "add": [("{He} buys {k_items} more at the market.", "After buying, {he} has {calc} {items}."),
                ("In spring, {k} new {items} are born.", "With the newborns there are {calc} {items}.")],
        "sub": [("{He} sells {k_items} to a neighbor.", "After selling, {calc} {items} are left."),
                ("A storm scares away {k_items}.", "After the storm, {calc} {items} remain.")],
        "mul": [("Over the years the number of {items} grows to {times} what it was.", "The {items} grow to {calc}.")],
        "div": [("{He} divides the {items} equally among {k_conts} and sells all but one {cont}.",
                 "One {cont} has {calc} {items}.")],
        "packs_add": [("{He} brings home {k_conts} of new animals with {m_items} in each.",
                       "The new {conts} hold {calc1} {items}.", "So the farm has {calc2} {items}.")],
        "packs_sub": [("{He} sends {k_conts} of {m_items} each to the market.",
                       "The market gets {calc1} {items}.", "The farm keeps {calc2} {items}.")],
        "question": ["How many {items} does {name} have now?", "How many {items} are on the farm at the end?"],
    },
    "library": {
        "items": [("book", "books"), ("magazine", "magazines"), ("comic", "comics"),
                  ("atlas", "atlases"), ("map", "maps"), ("dictionary", "dictionaries")],
        "containers": [("shelf", "shelves"), ("cart", "carts"), ("bin", "bins")],
        "start": ["The town library, run by {name}, has {v_items}.",
                  "{name} is a librarian in charge of {v_items}."],
        "add": [("A donor gives {k_items} to the library.", "With the donation there are {calc} {items}."),
                ("The library buys {k} new {items}.", "After the purchase there are {calc} {items}.")],
        "sub": [("Readers borrow {k_items} and never return them.", "That leaves {calc} {items}."),
                ("{name} removes {k_items} that are worn out.", "After removing the worn ones, {calc} {items} are left.")],
        "mul": [("After merging with another branch, the collection becomes {times} as large.",
                 "The collection grows to {calc} {items}.")],
        "div": [("The {items} are split equally onto {k_conts}; the library keeps one {cont} and donates the rest.",
                 "One {cont} holds {calc} {items}.")],
        "packs_add": [("{name} unpacks {k_conts} holding {m_items} each.",
                       "The {conts} hold {calc1} {items}.", "The library now has {calc2} {items}.")],
        "packs_sub": [("{name} lends {k_conts} of {m_items} each to schools.",
                       "The schools borrow {calc1} {items}.", "The library keeps {calc2} {items}.")],
        "question": ["How many {items} does the library have now?",
                     "How many {items} is {name} in charge of at the end?"],
    },
    "baking": {
        "items": [("cookie", "cookies"), ("muffin", "muffins"), ("cupcake", "cupcakes"),
                  ("roll", "rolls"), ("bagel", "bagels"), ("brownie", "brownies")],
        "containers": [("tray", "trays"), ("box", "boxes"), ("basket", "baskets")],
        "start": ["{name} bakes {v_items} for a school fair.", "{name} has {v_items} ready for a bake sale."],
        "add": [("{He} bakes {k} more {items}.", "After baking more, {he} has {calc} {items}."),
                ("A friend brings {k_items} to add to the table.", "Together that makes {calc} {items}.")],
        "sub": [("{His} little brother eats {k_items}.", "After that, {calc} {items} are left."),
                ("{He} gives {k_items} to the neighbors.", "{He} keeps {calc} {items}.")],
        "mul": [("Orders pour in, and by evening {he} has {times} as many {items} as before.",
                 "That makes {calc} {items}.")],
        "div": [("{He} packs the {items} equally into {k_conts}, keeps one {cont} and gives the rest away.",
                 "One {cont} holds {calc} {items}.")],
        "packs_add": [("{He} bakes {k_conts} more with {m_items} on each.",
                       "The {conts} hold {calc1} {items}.", "Now {he} has {calc2} {items}.")],
        "packs_sub": [("{He} sells {k_conts} of {m_items} each.",
                       "{He} sells {calc1} {items}.", "{He} has {calc2} {items} left.")],
        "question": ["How many {items} does {name} have at the end?", "How many {items} does {name} end up with?"],
    },
    "travel": {
        "items": [("passenger", "passengers"), ("tourist", "tourists"), ("student", "students"),
                  ("hiker", "hikers")],
        "containers": [("group", "groups"), ("van", "vans")],
        "start": ["{name} drives a bus that leaves the station with {v_items} on board.",
                  "A tour bus driven by {name} starts the trip with {v_items}."],
        "add": [("At the next stop, {k_items} get on.", "Then {calc} {items} are on the bus."),
                ("At the museum, {k} more {items} join the trip.", "The bus now carries {calc} {items}.")],
        "sub": [("At the next stop, {k_items} get off.", "Then {calc} {items} are on the bus."),
                ("At the beach, {k_items} leave the tour.", "The bus now carries {calc} {items}.")],
        "mul": [("At the big terminal, more tours merge and the number of {items} becomes {times} as large.",
                 "That gives {calc} {items}.")],
        "div": [("The {items} split into {k_conts} of equal size, and only one {cont} stays on the bus.",
                 "One {cont} has {calc} {items}.")],
        "packs_add": [("{k_conts} each drop off {m_items} who join the bus.",
                       "The {conts} bring {calc1} {items}.", "The bus now carries {calc2} {items}.")],
        "packs_sub": [("{k_conts} of {m_items} each get off at the old town.",
                       "That is {calc1} {items} getting off.", "Then {calc2} {items} are left on the bus.")],
        "question": ["How many {items} are on the bus at the end?", "How many {items} are on {name}'s bus now?"],
    },
    "savings": {
        "money": True,
        "items": [("dollar", "dollars")],
        "containers": [("envelope", "envelopes"), ("jar", "jars")],
        "start": ["{name} has {v_items} in a piggy bank.", "{name} saved {v_items} over the summer."],
        "add": [("{He} earns {k_items} mowing lawns.", "Then {he} has {calc} dollars."),
                ("{His} aunt gives {him} {k_items} as a gift.", "With the gift {he} has {calc} dollars.")],
        "sub": [("{He} spends {k_items} on a book.", "After that {he} has {calc} dollars."),
                ("{He} pays {k_items} for a concert ticket.", "{He} has {calc} dollars left.")],
        "mul": [("{His} grandmother makes the savings {times} as large.", "The savings grow to {calc} dollars.")],
        "div": [("{He} splits the money equally into {k_conts} and keeps only one {cont}.",
                 "One {cont} holds {calc} dollars.")],
        "packs_add": [("{He} walks dogs {k} times and earns {m_items} each time.",
                       "Dog walking earns {calc1} dollars.", "Then {he} has {calc2} dollars.")],
        "packs_sub": [("{He} buys {k} tickets that cost {m_items} each.",
                       "The tickets cost {calc1} dollars.", "{He} has {calc2} dollars left.")],
        "question": ["How many dollars does {name} have now?", "How much money, in dollars, does {name} have at the end?"],
    },
}

_DISTRACTORS = [
    "{name2} has {d} {other}.",
    "{name2}, a friend of {name}, is {d} years old.",
    "The weather report says it is {d} degrees outside.",
    "{name2} lives {d} kilometers away.",
    "The building next door has {d} windows.",
    "{name2} owns {d} {other}, but they play no part here.",
]
_OTHER_THINGS = ["marbles", "stamps", "bicycles", "postcards", "umbrellas", "plants", "keys"]


def _count(n: int, noun: tuple[str, str], money: bool = False) -> str:
    if money:
        return f"${n}"
    return f"{n} {noun[0] if n == 1 else noun[1]}"


def _calc(a: int, op: str, b: int, r: int) -> str:
    return f"{a} {op} {b} = <<{a}{op}{b}={r}>>{r}"


def _choose_op(rng, v: int, remaining: int, k: dict, prev: Optional[str] = None) -> Optional[tuple]:
    """Pick a feasible operation at value ``v``; returns (op, operands, results) or None."""
    cap, mv, mf = k["value_cap"], k["max_value"], k["max_factor"]
    cands: list[tuple[str, float]] = []
    if v + 1 <= cap:
        cands.append(("add", _OP_WEIGHTS["add"]))
    if v >= 2:
        cands.append(("sub", _OP_WEIGHTS["sub"]))
    if 2 * v <= cap and mf >= 2:
        cands.append(("mul", _OP_WEIGHTS["mul"]))
    divisors = [d for d in range(2, mf + 1) if v % d == 0 and v // d >= 1]
    if divisors:
        cands.append(("div", _OP_WEIGHTS["div"]))
    if remaining >= 2 and mf >= 2:
        if v + 4 <= cap:
            cands.append(("packs_add", _OP_WEIGHTS["packs_add"]))
        if v >= 5:
            cands.append(("packs_sub", _OP_WEIGHTS["packs_sub"]))
    if not cands:
        return None
    # the same operation twice in a row reads badly; make it less likely (not impossible)
    cands = [(op, w * (0.3 if op == prev else 1.0)) for op, w in cands]
    total = sum(w for _, w in cands)
    x = rng.random() * total
    for op, w in cands:
        x -= w
        if x < 0:
            break
    if op == "add":
        hi = min(mv, cap - v)
        kk = rng.randint(min(2, hi), hi)
        return op, (kk,), (v + kk,)
    if op == "sub":
        hi = min(mv, v - 1)
        kk = rng.randint(min(2, hi), hi)
        return op, (kk,), (v - kk,)
    if op == "mul":
        kk = rng.randint(2, min(mf, cap // v))
        return op, (kk,), (v * kk,)
    if op == "div":
        kk = rng.choice(divisors)
        return op, (kk,), (v // kk,)
    if op == "packs_add":
        kk = rng.randint(2, min(mf, (cap - v) // 2))
        m = rng.randint(2, max(2, min(mv, (cap - v) // kk)))
        return op, (kk, m), (kk * m, v + kk * m)
    # packs_sub: k*m <= v - 1
    kk = rng.randint(2, min(mf, (v - 1) // 2))
    m = rng.randint(2, max(2, min(mv, (v - 1) // kk)))
    return op, (kk, m), (kk * m, v - kk * m)


_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _one(rng, knobs: dict, template_names: Sequence[str], index: int) -> Record:
    tname = rng.choice(list(template_names))
    t = TEMPLATES[tname]
    money = bool(t.get("money", False))
    item = rng.choice(t["items"])
    cont = rng.choice(t["containers"])
    name, pron = rng.choice(NAMES)
    others = [nm for nm, _ in NAMES if nm != name]
    base = {
        "name": name, "He": pron.capitalize(), "he": pron,
        "His": "Her" if pron == "she" else "His", "his": "her" if pron == "she" else "his",
        "him": "her" if pron == "she" else "him",
        "items": item[1], "cont": cont[0], "conts": cont[1],
    }

    n_steps = rng.randint(knobs["min_steps"], knobs["max_steps"])
    v0 = rng.randint(2, knobs["max_value"])
    v = v0
    story = [rng.choice(t["start"]).format(v_items=_count(v0, item, money), **base)]
    steps: list[str] = []
    ops: list[str] = []
    sig: list[str] = [str(v0)]
    values = [v0]
    while len(steps) < n_steps:
        choice = _choose_op(rng, v, n_steps - len(steps), knobs, ops[-1] if ops else None)
        if choice is None:  # pragma: no cover - add or sub is always feasible for v in [2, cap-1]
            raise RuntimeError(f"no feasible operation at value {v}")
        op, operands, results = choice
        variant = rng.choice(t[op])
        fmt = dict(base)
        if op in _SYMBOL:
            (kk,) = operands
            (r,) = results
            fmt.update(k=kk, k_items=_count(kk, item, money), k_conts=_count(kk, cont),
                       times=_TIMES.get(kk, f"{kk} times"),
                       calc=_calc(v, _SYMBOL[op], kk, r))
            sentence, line = variant
            story.append(sentence.format(**fmt))
            steps.append(line.format(**fmt))
        else:
            kk, m = operands
            p, r = results
            fmt.update(k=kk, m=m, k_conts=_count(kk, cont), m_items=_count(m, item, money),
                       calc1=_calc(kk, "*", m, p),
                       calc2=_calc(v, "+" if op == "packs_add" else "-", p, r))
            sentence, line1, line2 = variant
            story.append(sentence.format(**fmt))
            steps.append(line1.format(**fmt))
            steps.append(line2.format(**fmt))
            values.append(p)
        v = r
        values.append(v)
        ops.append(op)
        sig.append(op + ":" + ",".join(map(str, operands)))

    n_distractors = 0
    if knobs["distractors"] > 0:
        out = []
        for s in story:
            out.append(s)
            if rng.random() < knobs["distractors"]:
                d = rng.randint(2, knobs["max_value"])
                out.append(rng.choice(_DISTRACTORS).format(
                    name2=rng.choice(others), name=name, d=d, other=rng.choice(_OTHER_THINGS)))
                n_distractors += 1
        story = out
    story.append(rng.choice(t["question"]).format(**base))
    question = " ".join(s[0].upper() + s[1:] for s in story)
    steps = [s[0].upper() + s[1:] for s in steps]
    return Record(
        question=question, steps=steps, answer=str(v),
        meta={"task": "arithmetic", "n_steps": len(steps), "template": tname, "ops": ops,
              "values": values, "n_distractors": n_distractors, "index": index,
              "max_value": knobs["max_value"], "value_cap": knobs["value_cap"],
              # same numbers and operations in another story are the same problem
              "dedup_key": "arithmetic:" + "|".join(sig)},
    )


def generate_arithmetic(
    n: int,
    seed: int,
    min_steps: int = 2,
    max_steps: int = 4,
    max_value: int = 100,
    max_factor: int = 5,
    value_cap: Optional[int] = None,
    distractors: float = 0.0,
    templates: Optional[Sequence[str]] = None,
) -> list[Record]:
    """``n`` word problems, deterministic in ``seed`` and the knobs.

    ``min_steps``/``max_steps`` bound the number of annotated solution lines;
    ``max_value`` bounds the start value and +/- operands; ``max_factor`` bounds
    multipliers, divisors and pack counts; every intermediate value lies in
    ``[1, value_cap]`` (default ``10 * max_value``); ``distractors`` is the probability
    of an irrelevant sentence after each story sentence; ``templates`` restricts the
    story templates (default: all of :data:`TEMPLATES`).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    if max_value < 2:
        raise ValueError("max_value must be >= 2")
    if max_factor < 2:
        raise ValueError("max_factor must be >= 2")
    cap = 10 * max_value if value_cap is None else value_cap
    if cap < max(2 * max_value, 20):
        raise ValueError(f"value_cap must be >= max(2*max_value, 20), got {cap}")
    if not 0.0 <= distractors <= 1.0:
        raise ValueError("distractors is a probability in [0, 1]")
    names = list(TEMPLATES) if templates is None else list(templates)
    for tn in names:
        if tn not in TEMPLATES:
            raise ValueError(f"unknown template {tn!r}; known: {sorted(TEMPLATES)}")
    knobs = {"min_steps": min_steps, "max_steps": max_steps, "max_value": max_value,
             "max_factor": max_factor, "value_cap": cap, "distractors": distractors}
    rng = make_rng(derive_seed("arithmetic", seed))
    return [_one(rng, knobs, names, i) for i in range(n)]
