"""`emohd predict`: media → utterances → face, voice and words → fusion → `Prediction` (predictor.py), its
JSON, CSV and PNG (outputs.py), many inputs with resume (batch.py)."""
