from azureml.studio.core.io.model_directory import ModelDirectory
def init():
    global model
    model = ModelDirectory.load('trained_model_outputs')
