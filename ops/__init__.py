"""Operations around the pipeline: the server stack it runs on."""
