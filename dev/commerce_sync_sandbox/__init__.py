"""Demo and test fixtures: catalog, ERP database, supplier feeds and a local Allegro simulator."""
