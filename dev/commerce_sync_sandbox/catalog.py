"""A deterministic demo catalog: the products the sandbox ERP, feeds and Allegro simulator share.

Everything derives from ``random.Random(seed)`` and a fixed base date, never from the clock, so
the same ``(n, seed)`` always yields the same products, byte for byte. EANs use the Polish GS1
prefix 590 followed by the product number, so they are valid and unique for ``n < 10**9``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from commerce_sync.sources.gtin import check_digit

BASE_DATE = datetime(2026, 11, 1, tzinfo=UTC)
"""Fixed 'now' of the sandbox: timestamps spread over the 30 days before it."""

EAN_PREFIX = "590"
MIN_PRICE = Decimal("5.00")
MAX_PRICE = Decimal("2000.00")


@dataclass(frozen=True)
class SandboxProduct:
    """One catalog product as the ERP masters it."""

    sku: str
    ean: str
    name: str
    brand: str
    category: str
    description: str
    purchase_price: Decimal
    vat_rate: Decimal
    stock: int
    reserved: int
    active: bool
    updated_at: datetime


@dataclass(frozen=True)
class _Kind:
    """A product type: its name, the variants it comes in and a plausible purchase price range."""

    name: str
    variants: tuple[str, ...]
    low: int
    high: int


_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[_Kind, ...]]] = {
    "Narzędzia": (
        ("Bosch", "Makita", "DeWalt", "Stanley", "Yato", "Graphite"),
        (
            _Kind("Wkrętarka akumulatorowa", ("12V", "18V", "18V 2x2Ah", "20V"), 150, 900),
            _Kind("Wiertarka udarowa", ("600W", "750W", "1100W"), 120, 700),
            _Kind("Szlifierka kątowa", ("125 mm", "230 mm", "850W"), 100, 650),
            _Kind("Zestaw kluczy nasadowych", ("46 el.", "94 el.", '1/2"'), 60, 400),
            _Kind("Poziomica aluminiowa", ("60 cm", "100 cm", "200 cm"), 20, 180),
            _Kind("Cordless Impact Driver", ("18V", "Brushless"), 250, 1200),
            _Kind("Piła tarczowa ręczna", ("1400W", "190 mm"), 220, 950),
        ),
    ),
    "Ogród": (
        ("Gardena", "Fiskars", "Cellfast", "Kärcher", "Stihl"),
        (
            _Kind("Wąż ogrodowy", ('1/2" 20 m', '3/4" 25 m', "50 m"), 25, 260),
            _Kind("Sekator nożycowy", ("P26", "kowadełkowy", "ergonomiczny"), 25, 160),
            _Kind("Kosiarka elektryczna", ("1400W 34 cm", "1800W 42 cm"), 300, 1400),
            _Kind("Myjka ciśnieniowa", ("K2", "K4 Power", "130 bar"), 250, 1600),
            _Kind("Zraszacz wahadłowy", ("Aqua S", "Polo 250"), 20, 140),
            _Kind("Garden Hose Reel", ("20 m", "30 m"), 60, 300),
            _Kind("Nasiona trawy", ("uniwersalna 1 kg", "sportowa 5 kg"), 15, 150),
        ),
    ),
    "Kuchnia": (
        ("Tefal", "Philips", "Zelmer", "Ambition", "Gerlach", "Bosch"),
        (
            _Kind("Czajnik elektryczny", ("1,7 l", "stalowy", "szklany"), 40, 300),
            _Kind("Patelnia tytanowa", ("24 cm", "28 cm", "grillowa"), 40, 280),
            _Kind("Blender kielichowy", ("800W", "1200W", "próżniowy"), 120, 900),
            _Kind("Zestaw garnków", ("6 el.", "10 el.", "indukcja"), 150, 1200),
            _Kind("Ekspres przelewowy", ("1,25 l", "z młynkiem"), 120, 800),
            _Kind("Hand Mixer", ("450W", "5 speeds"), 60, 260),
            _Kind("Młynek do kawy", ("żarnowy", "nożowy"), 40, 500),
        ),
    ),
    "Elektronika": (
        ("Xiaomi", "JBL", "Samsung", "Anker", "Sony", "Logitech"),
        (
            _Kind("Słuchawki bezprzewodowe", ("ANC", "douszne", "nauszne"), 60, 1200),
            _Kind("Głośnik Bluetooth", ("Flip", "Go", "wodoodporny"), 80, 900),
            _Kind("Powerbank", ("10000 mAh", "20000 mAh", "PD 65W"), 40, 300),
            _Kind("Ładowarka sieciowa USB-C", ("20W", "65W GaN", "100W"), 25, 280),
            _Kind("Mysz bezprzewodowa", ("ergonomiczna", "gamingowa"), 30, 450),
            _Kind("Wireless Keyboard", ("PL layout", "mechanical"), 90, 700),
            _Kind("Kamera sportowa", ("4K", "5K"), 300, 1900),
        ),
    ),
}

_FEATURES = (
    "Solidne wykonanie i dwuletnia gwarancja producenta.",
    "Idealny do codziennego użytku w domu i w warsztacie.",
    "Lekka konstrukcja ułatwia pracę także przez dłuższy czas.",
    "W zestawie instrukcja w języku polskim.",
    "Produkt fabrycznie nowy, oryginalnie zapakowany.",
    "Built to last, with a two-year manufacturer warranty.",
    "Energooszczędny i cichy w działaniu.",
)


def ean_for(number: int) -> str:
    """A valid EAN-13 for product ``number``: prefix 590, the number, the GS1 check digit."""
    data = f"{EAN_PREFIX}{number:09d}"
    return data + str(check_digit(data))


def sku_for(number: int) -> str:
    """The SKU of product ``number`` (``SKU-000001``)."""
    return f"SKU-{number:06d}"


def _price(rng: random.Random, kind: _Kind) -> Decimal:
    cents = rng.randint(kind.low * 100, kind.high * 100)
    return min(MAX_PRICE, max(MIN_PRICE, (Decimal(cents) / 100).quantize(Decimal("0.01"))))


def products(n: int = 300, seed: int = 42) -> list[SandboxProduct]:
    """The first ``n`` products of the catalog for ``seed``; identical for identical inputs.

    About 10 % have zero stock, about 2 % are inactive and about 10 % carry the reduced 8 % VAT.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    rng = random.Random(seed)
    categories = sorted(_CATEGORIES)
    window = 30 * 24 * 3600
    result: list[SandboxProduct] = []
    for number in range(1, n + 1):
        category = categories[rng.randrange(len(categories))]
        brands, kinds = _CATEGORIES[category]
        kind = kinds[rng.randrange(len(kinds))]
        brand = brands[rng.randrange(len(brands))]
        variant = kind.variants[rng.randrange(len(kind.variants))]
        model = f"{brand[:2].upper().replace('Ä', 'A')}-{rng.randint(100, 999)}"
        stock = 0 if rng.random() < 0.10 else rng.randint(1, 200)
        sentences = rng.sample(_FEATURES, rng.randint(0, 2))
        description = " ".join([f"{kind.name} {brand} {variant} ({model}).", *sentences])
        result.append(
            SandboxProduct(
                sku=sku_for(number),
                ean=ean_for(number),
                name=f"{kind.name} {brand} {variant} {model}",
                brand=brand,
                category=category,
                description=description,
                purchase_price=_price(rng, kind),
                vat_rate=Decimal("0.08") if rng.random() < 0.10 else Decimal("0.23"),
                stock=stock,
                reserved=rng.randint(0, min(stock, 5)),
                active=rng.random() >= 0.02,
                updated_at=BASE_DATE - timedelta(seconds=rng.randint(60, window)),
            )
        )
    return result
