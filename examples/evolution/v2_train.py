"""Version 2: `net` renamed `model`, evaluation extracted into a helper, plain loop over batches."""

import torch
import torch.nn.functional as F

import flordb as flor

seed = flor.arg("seed", 0)
epochs = flor.arg("epochs", 5)
lr = flor.arg("lr", 1e-3)
batch_size = flor.arg("batch_size", 64)

torch.manual_seed(seed)
torch.set_num_threads(1)

n, features, classes = 2048, 20, 4
inputs = torch.randn(n, features)
labels = (inputs @ torch.randn(features, classes) + 0.5 * torch.randn(n, classes)).argmax(dim=1)
train_x, train_y = inputs[:1536], labels[:1536]
test_x, test_y = inputs[1536:], labels[1536:]


def batches():
    order = torch.randperm(len(train_x))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield train_x[idx], train_y[idx]


def evaluate(model):
    model.eval()
    with torch.no_grad():
        return (model(test_x).argmax(dim=1) == test_y).float().mean().item()


model = torch.nn.Sequential(torch.nn.Linear(features, 64), torch.nn.ReLU(), torch.nn.Linear(64, classes))
optimizer = torch.optim.Adam(model.parameters(), lr=lr)

with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        model.train()
        for x, y in flor.loop("step", batches()):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        flor.log("acc", evaluate(model))
