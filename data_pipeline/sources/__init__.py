"""One adapter per dataset; each returns `Utterance`s plus a `SkipReport` and declares its label mapping."""
